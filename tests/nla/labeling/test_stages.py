"""The Ray Data stages called on plain dicts (no cluster), and the shard committer on a real lake."""

from __future__ import annotations

import numpy as np
import pytest

from nla.batches import concat
from nla.extract_config import ExtractConfig
from nla.labeling.committer import ShardCommitter
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from nla.settings import SamplingSettings
from nla.stages.explain import ExplainStage
from nla.stages.extract import ExtractStage
from nla.stages.read import ReadShard
from nla.stages.score import ScoreStage


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.jsonl").write_text('{"id": "a1", "text": "alice scored a late goal for the team in paris ."}\n'
                                  '{"id": "a2", "text": "a heavy storm moved over oslo last night ."}\n')
    (root / "b.jsonl").write_bytes(b'{"id": "b1", "text": "omar asked the bank about a loan ."}\n\xff\n'
                                   b'{"id": "b2", "text": "hi"}\n')
    (root / "c.parquet").write_bytes(b"not parquet")
    from nla.labeling.corpus import list_shards

    return list_shards(str(root))


def _pipeline(corpus, pair, make_base, samples=2):
    read = ReadShard(text_column="text", id_column="id")
    extract = ExtractStage(base=str(make_base("llama")), base_id="tiny",
                           config=ExtractConfig(layer=1, min_position=3, positions_per_doc=2))
    explain = ExplainStage(av=str(pair[0]), sampling=SamplingSettings(samples=samples, max_new_tokens=6))
    score = ScoreStage(ar=str(pair[1]))
    items = {"shard": np.array([s.id for s in corpus], dtype=object),
             "path": np.array([s.path for s in corpus], dtype=object),
             "format": np.array([s.format for s in corpus], dtype=object)}
    out = []
    for docs in read(items):
        out.append(score(explain(extract(docs))))
    return concat(out)


def test_stages_and_committer(corpus, pair, make_base, tmp_path):
    rows = _pipeline(corpus, pair, make_base)
    status = rows["status"].tolist()
    assert status.count("bad_shard") == 1 and "bad_document" in status and "short_document" in status
    ok = rows["status"] == "ok"
    assert set(rows["sample"][ok].tolist()) == {0, 1} and (rows["sample"][~ok] == -1).all()
    assert rows["vector"].shape[1] == 32 and rows["vector"].dtype == np.float32
    scored = ok & (rows["expl_status"] == "ok")
    assert np.isnan(rows["mse"][~scored]).all()
    for col in ("t_extract", "t_explain", "t_score"):
        assert (rows[col] >= 0).all()

    lake = Lake(tmp_path / "lake")
    logs = []
    c = ShardCommitter(lake, [s.id for s in corpus], run_id="r1", config_hash="h", base_id="tiny", layer=1, d=32,
                       av_id="pair/av", ar_id="pair/ar", log=logs.append)
    for start in range(0, len(rows["status"]), 3):  # ordered batches, as Ray Data delivers them
        c.add({k: v[start:start + 3] for k, v in rows.items()})
    stats = c.finish()
    assert stats.shards_committed == 2 and stats.shards_failed[0][0] == "c.parquet"
    assert stats.activations == int((ok & (rows["sample"] == 0)).sum()) and stats.explanations == int(ok.sum())
    assert stats.bad_documents == 1 and stats.short_documents == 1 and stats.documents == 5
    assert lake.committed_shards("activations") == {"a.jsonl", "b.jsonl"}
    q = LakeQuery(lake)
    assert q.run("SELECT count(*) n FROM explanations").column("n")[0].as_py() == stats.explanations
    assert q.run("SELECT count(DISTINCT sample) n FROM explanations").column("n")[0].as_py() == 2
    # a rerun of the same shard replaces its rows
    c2 = ShardCommitter(lake, ["a.jsonl"], run_id="r2", config_hash="h", base_id="tiny", layer=1, d=32,
                        av_id="pair/av", ar_id="pair/ar", log=logs.append)
    c2.add({k: v[rows["shard"] == "a.jsonl"] for k, v in rows.items()})
    c2.finish()
    q = LakeQuery(lake)  # a new snapshot, after the rerun's commits
    k = q.run("SELECT count(*) n, count(DISTINCT (act_id, sample)) u FROM explanations").to_pylist()[0]
    assert k["n"] == k["u"] == stats.explanations
    assert any("[skip] shard c.parquet" in m for m in logs)


def test_a_failed_av_batch_becomes_error_rows(pair):
    """An AV batch that raises (all-zero vectors cannot be injected) is kept as one 'error' row per sample, its
    raw_output the exception; rows that were already failed pass through once; a good batch after it is explained."""
    explain = ExplainStage(av=str(pair[0]), sampling=SamplingSettings(samples=2, max_new_tokens=4))
    batch = {"act_id": np.array(["z1", "z2", "bad"], object), "vector": np.zeros((3, 32), np.float32),
             "status": np.array(["ok", "ok", "short_document"], object)}
    out = explain(batch)
    assert out["act_id"].tolist() == ["z1", "z1", "z2", "z2", "bad"] and out["sample"].tolist() == [0, 1, 0, 1, -1]
    assert out["expl_status"].tolist() == ["error"] * 4 + [""]
    assert out["explanation"].tolist() == [None] * 5 and out["n_tokens"].tolist() == [0] * 5
    assert len({r for r in out["raw_output"][:4]}) == 1 and out["raw_output"][0].startswith("NLAInputError: ")
    assert "all zeros" in out["raw_output"][0] and out["raw_output"][4] == ""
    good = explain({**batch, "vector": np.ones((3, 32), np.float32)})
    assert good["expl_status"].tolist()[:4] != ["error"] * 4 and "error" not in good["expl_status"].tolist()
