"""Delta store: per-shard commits, retries without duplicates, ledger, metadata, time travel, maintenance, errors."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pyarrow as pa
import pytest

from nla.errors import NLALakeError, NLASchemaError, NLATableNotFound
from nla.lake.store import Lake
from nla.schemas import ACTIVATIONS, EXPLANATIONS
from tests.nla.lake.conftest import shard_rows, versions


def count(lk: Lake, name: str) -> int:
    return lk.table(name).to_pyarrow_dataset().count_rows()


def keys(lk: Lake, name: str, spec) -> list[tuple]:
    t = lk.table(name).to_pyarrow_dataset().to_table(columns=list(spec.key))
    return list(zip(*[t.column(k).to_pylist() for k in spec.key]))


def test_commit_and_retry_never_duplicates(lake):
    assert count(lake, "activations") == 120 and count(lake, "explanations") == 120
    acts, expl = shard_rows(1)
    lake.commit_shard(ACTIVATIONS, acts, shard="s1", run_id="r2")  # a retried shard
    lake.commit_shard(EXPLANATIONS, expl, shard="s1", run_id="r2")
    for name, spec in (("activations", ACTIVATIONS), ("explanations", EXPLANATIONS)):
        k = keys(lake, name, spec)
        assert len(k) == len(set(k)) == 120
    assert lake.committed_shards("activations") == {"s0", "s1", "s2"}
    ledger = lake.table("shards").to_pyarrow_dataset().to_table().to_pylist()
    s1 = [r for r in ledger if r["table_name"] == "activations" and r["shard"] == "s1"]
    assert len(s1) == 1 and s1[0]["run_id"] == "r2" and s1[0]["rows"] == 40


def test_commit_metadata_and_time_travel(lake):
    h = lake.history("activations", 1)[0]
    assert h["run_id"] == "r1" and h["config_hash"] == "cfg1" and h["shard"] == "s2"
    assert lake.table("activations", version=1).to_pyarrow_dataset().count_rows() == 40  # after the first shard
    assert lake.table("activations", version=3).to_pyarrow_dataset().count_rows() == 120
    with pytest.raises(NLALakeError, match="no version 99"):
        lake.table("activations", version=99)


def test_optimize_and_safe_vacuum(lake):
    """Shard s0 holds three files (its rows under three recipes): compaction makes them one, in one commit, and
    changes no row; with one file per shard left, a second compaction has nothing to do and commits nothing."""
    acts = shard_rows(0)[0]
    for recipe in ("b", "c"):
        lake.commit_shard(ACTIVATIONS, acts.set_column(acts.schema.get_field_index("recipe"), "recipe",
                                                       pa.array([recipe] * acts.num_rows)),
                          shard="s0", run_id="r3", recipe=recipe)
    before = lake.table("activations").to_pyarrow_dataset().to_table().sort_by([("act_id", "ascending"),
                                                                                 ("recipe", "ascending")])
    assert before.num_rows == 200 and len(lake.table("activations").file_uris()) == 5
    version = lake.table("activations").version()
    metrics = lake.optimize("activations")
    assert (metrics["numFilesRemoved"], metrics["numFilesAdded"], metrics["partitionsOptimized"]) == (3, 1, 1)
    assert len(lake.table("activations").file_uris()) == 3 and lake.table("activations").version() == version + 1
    assert lake.table("activations").to_pyarrow_dataset().to_table().sort_by([("act_id", "ascending"),
                                                                              ("recipe", "ascending")]).equals(before)
    assert lake.optimize("activations")["numFilesRemoved"] == 0 and lake.table("activations").version() == version + 1
    with pytest.raises(NLALakeError, match="safe minimum"):
        lake.vacuum("activations", retention_hours=0)
    assert lake.vacuum("activations") == []  # nothing older than the safe retention yet


def test_schema_mismatches_are_refused(lake):
    before = versions(lake)
    acts, _ = shard_rows(5, d=8)
    with pytest.raises(NLASchemaError, match="vector"):  # wrong d
        lake.commit_shard(ACTIVATIONS, acts, shard="s5", run_id="r")
    acts, _ = shard_rows(5)
    with pytest.raises(NLASchemaError, match="norm: got double"):
        lake.commit_shard(ACTIVATIONS, acts.set_column(9, "norm", acts.column("norm").cast(pa.float64())),
                          shard="s5", run_id="r")
    with pytest.raises(NLASchemaError, match="missing columns"):
        lake.commit_shard(ACTIVATIONS, acts.drop_columns(["token"]), shard="s5", run_id="r")
    with pytest.raises(NLASchemaError, match="unknown columns"):
        lake.commit_shard(ACTIVATIONS, acts.append_column("extra", pa.array([1] * acts.num_rows)), shard="s5",
                          run_id="r")
    with pytest.raises(NLASchemaError, match="other shard values"):
        lake.commit_shard(ACTIVATIONS, acts, shard="s6", run_id="r")
    with pytest.raises(NLASchemaError, match="non-null"):
        lake.commit_shard(ACTIVATIONS, acts.set_column(0, "act_id", pa.array([None] * acts.num_rows, pa.string())),
                          shard="s5", run_id="r")
    with pytest.raises(NLASchemaError, match="float16"):
        lake.create(ACTIVATIONS, name="half", d=16, vector_dtype="float16")
    assert versions(lake) == before  # nothing written


def test_missing_table(tmp_path):
    with pytest.raises(NLATableNotFound, match="not found") as e:
        Lake(tmp_path / "empty").table("explanations")
    assert "Fix" in str(e.value)


def test_creators_racing_on_a_fresh_lake_all_succeed(tmp_path):
    """Jobs started together on a new lake all create `runs` (and the data tables) at once: the losers of the
    creation race find the table made and go on (two label jobs once failed here with 'A table already exists')."""
    import threading

    from nla.schemas import RUNS

    for attempt in range(6):
        root, errors = tmp_path / f"lake{attempt}", []
        barrier = threading.Barrier(4)

        def create(root=root, errors=errors, barrier=barrier) -> None:
            lk = Lake(root)
            barrier.wait()
            try:
                lk.create(RUNS)
                lk.create(ACTIVATIONS, d=8)
            except Exception as e:  # noqa: BLE001 - collected, asserted below
                errors.append(e)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        lk = Lake(root)
        # (a creator that lost the race for version 0 may have committed its empty create as version 1: harmless)
        assert count(lk, "runs") == count(lk, "activations") == 0 and lk.layout("activations")["d"] == 8
        with pytest.raises(NLASchemaError, match="d=8, not d=16"):
            lk.create(ACTIVATIONS, d=16)


def _write_shards(root: str, shards: list[int]) -> None:
    lk = Lake(root)
    for s in shards:
        lk.commit_shard(ACTIVATIONS, shard_rows(s)[0], shard=f"s{s}", run_id=f"w{s}")


def test_concurrent_writers_lose_nothing(tmp_path):
    root = str(tmp_path / "lake")
    _write_shards(root, [0])  # the table exists before the writers race
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_shards, args=(root, list(range(1 + i, 9, 2)))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    lk = Lake(root)
    k = keys(lk, "activations", ACTIVATIONS)
    assert len(k) == len(set(k)) == 9 * 40
    assert lk.committed_shards("activations") == {f"s{i}" for i in range(9)}
    writes = [h for h in lk.history("activations") if "predicate" in h.get("operationParameters", {})]  # not the
    # creation (a concurrent creator may even have made two of those): one shard commit per writer
    assert len(writes) == 9 and {h["run_id"] for h in writes} == {f"w{i}" for i in range(9)}


def raced_write(lk: Lake, name: str, rows: pa.Table, shard: str, races: list[int]):
    """A shard write that, on each of its first races[0] attempts, loses a real race: another writer commits the
    same partition after this one read the table and before it commits (Delta then refuses the stale commit)."""
    from deltalake import write_deltalake

    predicate = f"shard = '{shard}'"

    def write(t, props) -> None:  # t: the table as this writer read it (Lake._retry loads it again for each try)
        if races[0] > 0:
            races[0] -= 1
            write_deltalake(lk.uri(name), rows, mode="overwrite", predicate=predicate)  # the other writer wins
        write_deltalake(t, rows, mode="overwrite", predicate=predicate, commit_properties=props)

    return write


def test_lost_commit_races_are_retried_then_refused_clearly(lake, monkeypatch):
    import nla.lake.store as store
    from nla.errors import NLACommitConflict

    acts, _ = shard_rows(1)
    before = count(lake, "activations")
    lake.conflicts = 0
    lake._retry("activations", raced_write(lake, "activations", acts, "s1", [2]), run_id="race")
    assert lake.conflicts == 2  # two real conflicts from Delta, retried; the third attempt committed
    assert count(lake, "activations") == before  # the shard replaced, never duplicated
    k = keys(lake, "activations", ACTIVATIONS)
    assert len(k) == len(set(k))
    monkeypatch.setattr(store, "COMMIT_RETRIES", 2)  # past its count, a commit is still retried within the time
    lake.conflicts = 0
    lake._retry("activations", raced_write(lake, "activations", acts, "s1", [4]), run_id="race")
    assert lake.conflicts == 4 and count(lake, "activations") == before
    monkeypatch.setattr(store, "COMMIT_RETRY_S", 0.0)
    version = lake.table("activations").version()
    with pytest.raises(NLACommitConflict, match="2 commits in a row lost to concurrent writers.*Fix: rerun"):
        lake._retry("activations", raced_write(lake, "activations", acts, "s1", [5]), run_id="race")
    # only the winners' commits landed; the loser wrote nothing
    assert lake.table("activations").version() == version + 2 and count(lake, "activations") == before


def test_vector_row_groups_hold_32_mib(tmp_path):
    """Vector tables are written in row groups of ROW_GROUP_BYTES (32 MiB) of vectors, so readers stream them in
    bounded pieces: at d = 4096 that is 2,048 rows a group."""
    import pyarrow.parquet as pq

    from nla.lake.store import ROW_GROUP_BYTES

    lk = Lake(tmp_path / "lake")
    acts, _ = shard_rows(0, n=4500, d=4096)
    lk.commit_shard(ACTIVATIONS, acts, shard="s0", run_id="r")
    [path] = lk.table("activations").file_uris()
    md = pq.read_metadata(path)
    groups = [md.row_group(g) for g in range(md.num_row_groups)]
    assert ROW_GROUP_BYTES == 32 * 2**20 and [g.num_rows for g in groups] == [2048, 2048, 404]
    vector = [c for c in range(md.num_columns) if groups[0].column(c).path_in_schema.startswith("vector.")]
    assert sum(groups[0].column(c).total_uncompressed_size for c in vector) >= ROW_GROUP_BYTES
