"""The ANN index: agrees with exact search, extends incrementally, scans what it lacks, survives a killed build,
knows nothing of rows outside the snapshot searched (time travel, replaced shards); bf16 vectors round-trip."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from nla.errors import NLAInputError
from nla.lake.ann import IndexParams, update_index
from nla.lake.index_files import IndexFiles
from nla.lake.query import LakeQuery
from nla.lake.rows import activation_table
from nla.lake.schema import from_bfloat16_bits, to_bfloat16_bits, vectors_from_arrow
from nla.lake.store import Lake
from nla.schemas import ACTIVATIONS
from tests.nla.lake.conftest import shard_rows

D = 32
# IVF-PQ at toy size: 8 lists, all probed, so the rerank decides and results must equal exact search
IVF = IndexParams(flat_below=0, pca_dims=16, nlist=8, pq_dsub=2, train_rows=2_000, nprobe=8, rerank=300)


def clustered(s: int, n: int, d: int = D) -> dict:
    rng = np.random.default_rng(100 + s)
    centers = np.random.default_rng(7).standard_normal((12, d)) * 3
    v = centers[rng.integers(0, 12, n)] + rng.standard_normal((n, d))
    return dict(doc_id=[f"d{s}-{i}" for i in range(n)], position=[1] * n, token_id=np.arange(n), token=["t"] * n,
                context=["c"] * n, vector=v.astype(np.float32))


def commit(lk: Lake, s: int, n: int = 400, *, dtype: str = "float32", base: str = "toy") -> None:
    acts = activation_table(clustered(s, n), base_model=base, layer=1, shard=f"s{s}", run_id="r", vector_dtype=dtype)
    lk.commit_shard(ACTIVATIONS, acts, shard=f"s{s}", run_id="r")


def queries(n: int = 20) -> np.ndarray:
    return np.asarray(clustered(99, n)["vector"])


def same_as_exact(q: LakeQuery, qs: np.ndarray, k: int = 10) -> str:
    """The index's top-k equals the exact scan's for every query; returns how the index answered."""
    methods = set()
    for v in qs:
        want = q.search(v, k, exact=True)
        got = q.search(v, k)
        assert [h[0] for h in got.hits] == [h[0] for h in want.hits]
        assert np.allclose([h[1] for h in got.hits], [h[1] for h in want.hits], atol=1e-6)
        methods.add(got.method)
    assert len(methods) == 1
    return methods.pop()


@pytest.mark.parametrize("params", [IndexParams(), IVF], ids=["flat", "ivfpq"])
def test_index_agrees_with_exact_and_tail_is_scanned(tmp_path, params):
    lk = Lake(tmp_path / "lake")
    for s in range(3):
        commit(lk, s)
    r = update_index(lk, params=params)
    assert (r.kind, r.rows_indexed, r.table_version) == ("flat" if params.flat_below else "ivfpq", 1200, 3)
    with LakeQuery(lk) as q:
        assert same_as_exact(q, queries()) == "index"
    commit(lk, 3)  # committed after the index: found by the exact scan of the tail
    with LakeQuery(lk) as q:
        assert same_as_exact(q, queries()) == "index+scan" and q.last_search.scanned_rows == 400
        sql = q.run(f"SELECT * FROM nearest({queries(1)[0].tolist()}::FLOAT[{D}], 3)").to_pylist()
        assert [r["act_id"] for r in sql] == [h[0] for h in q.search(queries(1)[0], 3, exact=True).hits]
        assert {r["method"] for r in sql} == {"index+scan"}
        exact = q.run(f"SELECT method FROM nearest({queries(1)[0].tolist()}::FLOAT[{D}], 3, exact := true)")
        assert set(exact.column("method").to_pylist()) == {"exact"}
    r = update_index(lk)  # catch up: one more segment, the old ones untouched
    assert (r.rows_added, r.segments, r.table_version) == (400, 2, 4)
    assert update_index(lk).rows_added == 0
    with LakeQuery(lk) as q:
        assert same_as_exact(q, queries()) == "index"


def test_time_travel_and_replaced_shards_hide_rows_the_snapshot_lacks(tmp_path):
    lk = Lake(tmp_path / "lake")
    for s in range(2):
        commit(lk, s)
    v2 = lk.table("activations").version()
    commit(lk, 2)
    commit(lk, 0, base="other-base")  # shard s0 replaced: new act_ids, the old rows are gone from the table
    update_index(lk, params=IVF)
    commit(lk, 1, base="third")  # replaced after indexing: its indexed rows must vanish, the new ones be scanned
    qs = queries()
    with LakeQuery(lk) as q:
        assert same_as_exact(q, qs) == "index+scan"
        live = set(q.run("SELECT act_id FROM activations", limit=None).column(0).to_pylist())
        assert all(h[0] in live for v in qs for h in q.search(v, 10).hits)
    with LakeQuery(lk, versions={"activations": v2}) as q:  # before s2 and the replacements
        assert same_as_exact(q, qs) == "index+scan"
        live = set(q.run("SELECT act_id FROM activations", limit=None).column(0).to_pylist())
        assert len(live) == 800 and all(h[0] in live for v in qs for h in q.search(v, 10).hits)


def test_killed_build_leaves_the_previous_index(tmp_path, monkeypatch):
    lk = Lake(tmp_path / "lake")
    commit(lk, 0)
    update_index(lk)
    commit(lk, 1)

    def killed(*a, **k):
        raise KeyboardInterrupt  # the build dies after writing segment files, before publishing

    monkeypatch.setattr(IndexFiles, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        update_index(lk)
    monkeypatch.undo()
    files = IndexFiles(lk, "activations")
    (tmp_path / "lake" / "_index" / "activations" / "manifest-0000000002.json").write_text('{"truncated')
    assert files.manifest().table_version == 1  # an unreadable newest manifest is skipped, never half-read
    with LakeQuery(lk) as q:
        assert same_as_exact(q, queries()) == "index+scan"
    assert update_index(lk).table_version == 2


def test_bf16_vectors_are_stored_at_two_bytes_and_read_back_exactly(tmp_path):
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        lk = Lake(tmp_path / dtype)
        commit(lk, 0, dtype=dtype)
        sizes[dtype] = sum(p.stat().st_size for p in (tmp_path / dtype / "activations").rglob("*.parquet"))
    assert lk.layout("activations")["vector_dtype"] == "bfloat16" and sizes["bfloat16"] < 0.6 * sizes["float32"]
    cols = clustered(0, 400)
    want = from_bfloat16_bits(to_bfloat16_bits(cols["vector"]))  # the numbers a bf16 model would have produced
    ids = activation_table(cols, base_model="toy", layer=1, shard="s0", run_id="r").column("act_id").to_pylist()
    with LakeQuery(lk) as q:
        t = q.run("SELECT act_id, vector FROM activations", limit=None)
        assert t.schema.field("vector").type.value_type == pa.int16()
        got = dict(zip(t.column(0).to_pylist(), vectors_from_arrow(t.column(1))))
        assert all(np.array_equal(got[a], w) for a, w in zip(ids, want))
    update_index(lk)
    with LakeQuery(lk) as q:
        assert same_as_exact(q, queries()) == "index"


def test_bad_query_vectors_are_refused(tmp_path):
    lk = Lake(tmp_path / "lake")
    commit(lk, 0)
    update_index(lk)
    with LakeQuery(lk) as q:
        for bad in (np.zeros(D), np.full(D, np.nan)):
            with pytest.raises(NLAInputError, match="zero or has NaN"):
                q.search(bad, 5)
            with pytest.raises(NLAInputError, match="zero or has NaN"):
                q.run(f"SELECT * FROM nearest({[0.0] * D}::FLOAT[{D}], 3)")
        with pytest.raises(NLAInputError, match="d=8"):
            q.search(np.ones(8), 5)


def test_shard_rows_fixture_still_searches(lake):
    with LakeQuery(lake) as q:
        v = shard_rows(1)[0].column("vector")
        assert q.search(vectors_from_arrow(v)[3], 1).hits[0][1] == pytest.approx(1.0, abs=1e-5)
