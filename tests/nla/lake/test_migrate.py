"""A lake written by the previous schema (v1: shards known by name, rows by no recipe) is refused with the command
that migrates it, and `nla migrate` upgrades it in place: atomic per table, resumable, nothing lost."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from nla.errors import NLASchemaError
from nla.lake.migrate import LEGACY_RECIPE, migrate, pending
from nla.lake.query import LakeQuery
from nla.lake.schema import arrow_schema
from nla.lake.store import Lake, now
from nla.schemas import ACTIVATIONS, EXPLANATIONS, RUNS, SHARDS
from tests.nla.lake.conftest import D, shard_rows

V3_NEW = {ACTIVATIONS.name: {"source", "label", "meta"}, EXPLANATIONS.name: {"flags"}, RUNS.name: set(),
          SHARDS.name: set()}
V1_DROP = {ACTIVATIONS.name: {"recipe"} | V3_NEW[ACTIVATIONS.name], EXPLANATIONS.name: {"recipe", "flags"},
           RUNS.name: {"recipes"}, SHARDS.name: {"recipe", "name", "path", "fingerprint", "size"}}


def old(spec, version: int, drop: set[str]):
    """The table as an older nla declared it."""
    return dataclasses.replace(spec, version=version, columns=tuple(c for c in spec.columns if c.name not in drop),
                               key=tuple(k for k in spec.key if k not in drop))


def v1(spec):
    return old(spec, 1, V1_DROP[spec.name])


def write_v1_lake(root) -> Lake:
    lake = Lake(root)
    for s in range(2):
        acts, expl = shard_rows(s)
        for spec, t in ((ACTIVATIONS, acts), (EXPLANATIONS, expl)):
            old = v1(spec)
            lake.create(old, d=D if spec.has_vector else None)
            write_deltalake(lake.uri(spec.name), t.drop_columns(sorted(V1_DROP[spec.name])).cast(arrow_schema(old, d=D if spec.has_vector
                                                                                            else None)), mode="append")
            ledger = {"table_name": [spec.name], "shard": [f"part-{s}.jsonl"], "run_id": ["r1"],
                      "rows": [t.num_rows], "table_version": [1], "committed_at": [now()]}
            if s == 0 and spec is ACTIVATIONS:
                lake.create(v1(SHARDS))
            write_deltalake(lake.uri(SHARDS.name), pa.table(ledger, schema=arrow_schema(v1(SHARDS))), mode="append")
    run = {c.name: [None] for c in v1(RUNS).columns} | {"run_id": ["r1"], "job": ["label"], "status": ["ok"]}
    lake.create(v1(RUNS))
    write_deltalake(lake.uri(RUNS.name), pa.table(run, schema=arrow_schema(v1(RUNS))), mode="append")
    return lake


def test_v1_lake_is_refused_with_the_command_then_migrated(tmp_path, capsys):
    lake = write_v1_lake(tmp_path / "lake")
    with pytest.raises(NLASchemaError, match=rf"Fix: `nla migrate --lake {lake.root}` upgrades the lake in place"):
        lake.check_versions()
    before = {t: lake.table(t).to_pyarrow_dataset().count_rows() for t in lake.names()}
    assert pending(lake) == {t: 1 for t in (ACTIVATIONS.name, EXPLANATIONS.name, SHARDS.name, RUNS.name)}
    from nla.cli.main import main

    assert main(["migrate", "--lake", lake.root]) == 0
    out = capsys.readouterr().out
    assert f"lake {lake.root}: migrated activations, explanations, shards, runs" in out
    assert f"[migrate] activations: 80 rows rewritten at schema v{ACTIVATIONS.version}" in out
    lake.check_versions()
    assert pending(lake) == {} and migrate(lake) == []
    assert main(["migrate", "--lake", lake.root]) == 0
    assert "already at this nla's schema: nothing to migrate" in capsys.readouterr().out
    with LakeQuery(lake) as q:
        assert {t: q.run(f"SELECT count(*) n FROM {t}").column("n")[0].as_py() for t in before} == before
        assert q.run("SELECT DISTINCT recipe FROM explanations").column(0).to_pylist() == [LEGACY_RECIPE]
        assert q.run("SELECT DISTINCT source FROM activations").column(0).to_pylist() == ["corpus"]
        ledger = q.run("SELECT shard, recipe, name, fingerprint FROM shards ORDER BY ALL", limit=None).to_pylist()
    assert ledger[0] == {"shard": "part-0.jsonl", "recipe": LEGACY_RECIPE, "name": "part-0.jsonl", "fingerprint": ""}
    assert json.loads(lake.table(ACTIVATIONS.name).metadata().description)["schema_version"] == ACTIVATIONS.version
    old = lake.table(ACTIVATIONS.name, version=lake.table(ACTIVATIONS.name).version() - 2)  # before the migration
    assert "recipe" not in pa.schema(old.schema()).names  # the v1 table stays readable by time travel
    assert old.to_pyarrow_dataset().count_rows() == before[ACTIVATIONS.name]


def test_migration_killed_between_its_two_commits_is_finished_by_a_rerun(tmp_path):
    lake = write_v1_lake(tmp_path / "lake")

    class Killed(Exception):
        pass

    def die(line: str) -> None:  # the first table's rewrite has committed; its recorded version not yet
        raise Killed(line)

    with pytest.raises(Killed):
        migrate(lake, log=die)
    first = next(iter(pending(lake)))
    assert "recipe" in pa.schema(lake.table(first).schema()).names  # rewritten, still marked v1
    with pytest.raises(NLASchemaError, match="nla migrate"):
        lake.check_versions()
    assert sorted(migrate(lake)) == sorted([ACTIVATIONS.name, EXPLANATIONS.name, SHARDS.name, RUNS.name])
    with LakeQuery(lake) as q:
        assert q.run("SELECT count(*) - count(DISTINCT act_id) d FROM activations").column(0)[0].as_py() == 0


def test_v2_lake_gets_sources_and_the_flags_its_rows_show(tmp_path, capsys):
    """A lake of the previous schema (v2: no vector sources, no quality flags): activations become source 'corpus',
    explanations get the flags their own status and text give; template and low_norm wait for the next run."""
    lake = Lake(tmp_path / "lake")
    for s in range(2):
        acts, expl = shard_rows(s)
        for spec, t in ((ACTIVATIONS, acts), (EXPLANATIONS, expl)):
            v2 = old(spec, 2, V3_NEW[spec.name])
            lake.create(v2, d=D if spec.has_vector else None)
            write_deltalake(lake.uri(spec.name), t.drop_columns(sorted(V3_NEW[spec.name])).cast(
                arrow_schema(v2, d=D if spec.has_vector else None)), mode="append")
    with pytest.raises(NLASchemaError, match="nla migrate"):
        lake.check_versions()
    assert pending(lake) == {ACTIVATIONS.name: 2, EXPLANATIONS.name: 2}
    from nla.cli.main import main

    assert main(["migrate", "--lake", lake.root]) == 0
    assert "migrated activations, explanations" in capsys.readouterr().out
    with LakeQuery(lake) as q:
        assert q.run("SELECT source, count(*) n, count(label) l FROM activations GROUP BY 1").to_pylist() == [
            {"source": "corpus", "n": 80, "l": 0}]
        flags = q.run("SELECT status, flags, count(*) n FROM explanations GROUP BY ALL ORDER BY status",
                      limit=None).to_pylist()
    # shard_rows: one no_tags row per shard, the rest clean toy-like explanations
    assert flags == [{"status": "no_tags", "flags": ["no_tags"], "n": 2}, {"status": "ok", "flags": [], "n": 78}]
