"""The lake overview (nla/lake/overview.py) on a lake of known content, and a running job's progress as the job's
RunRecorder (nla/labeling/progress.py) records it while shards are committed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from nla.labeling.progress import RunRecorder
from nla.lake import overview
from nla.lake.query import LakeQuery
from nla.lake.store import now
from nla.schemas import EXPLANATIONS
from tests.nla.lake.conftest import shard_rows


def test_summary_counts_histogram_recipes_and_features(lake):
    with LakeQuery(lake) as q:
        s = overview.summary(q)
        assert overview.runs(q) == [] and overview.progress(q) == []  # no runs table in this lake
    assert {t["name"]: t["rows"] for t in s["tables"]} == {"activations": 120, "explanations": 120, "shards": 6}
    mse = np.tile(np.linspace(0.05, 1.95, 40).astype(np.float32), 3)
    want = np.bincount(np.minimum(np.floor(mse / 0.05).astype(int), 39), minlength=40)
    assert s["histogram"]["edges"][:3] == [0.0, 0.05, 0.1] and s["histogram"]["edges"][-1] == 2.0
    assert s["histogram"]["recipes"] == {"": want.tolist()} and sum(want) == 120
    [r] = s["recipes"]
    assert (r["recipe"], r["av"], r["ar"], r["rows"], r["scored"], r["fields"]) == ("", "toy-av", "toy-ar", 120, 120,
                                                                                     None)
    assert r["mean_mse"] == pytest.approx(float(mse.mean()), rel=1e-5)
    top = [(f["feature"], f["n"]) for f in s["features"][:5]]
    # 30 rows a topic, but the first row of each shard (weather) has no explanation (status no_tags)
    assert top == [("The text is about finance.", 30), ("The text is about health.", 30),
                   ("The text is about music.", 30), ("The text is about weather.", 27), ("It ends with tok 1.", 3)]
    assert len(s["features"]) == overview.TOP_FEATURES
    # flags set at commit: the three rows without tags; every activation committed by a job is from the corpus
    assert s["flags"] == [{"flag": "no_tags", "n": 3}] and s["sources"] == [{"source": "corpus", "n": 120}]


def recipe_rows(shard: int, recipe: str) -> pa.Table:
    expl = shard_rows(shard)[1]
    return expl.set_column(expl.schema.get_field_index("recipe"), "recipe", pa.array([recipe] * expl.num_rows))


def test_progress_of_a_running_job_then_its_figures_when_done(lake):
    rec = RunRecorder(lake, "label-r2", job="label", config={"input": "x"}, started_at=now(), every_s=0,
                      recipes={EXPLANATIONS.name: {"hash": "abc1", "fields": {"sampling": {"temperature": 1.0}}}},
                      shards_total=3)
    rec.record("running")
    with LakeQuery(lake) as q:
        [p] = overview.progress(q)
    assert (p["run_id"], p["shards_total"], p["shards_committed"], p["rows_committed"]) == ("label-r2", 3, 0, 0)
    assert p["shards_per_s"] is None and p["eta_s"] is None and p["errors"]["shards_failed"] == 0

    lake.commit_shard(EXPLANATIONS, recipe_rows(0, "abc1"), shard="s0", run_id="label-r2", recipe="abc1")
    assert rec.progress(2, lambda: {"shards_committed": 1, "shards_failed": 1, "explanations": 40})
    assert not rec.progress(2, lambda: {})  # nothing new since the last record
    with LakeQuery(lake) as q:
        [p] = overview.progress(q)
        assert [r["recipe"] for r in overview.recipes(q)] == ["", "abc1"]
        assert overview.recipes(q)[1]["fields"] == {"sampling": {"temperature": 1.0}}
    assert (p["shards_committed"], p["rows_committed"], p["errors"]["shards_failed"]) == (1, 40, 1)
    assert p["shards_per_s"] == pytest.approx(1 / p["elapsed_s"], rel=0.05)
    assert p["eta_s"] == pytest.approx(2 * p["elapsed_s"], rel=0.05)  # two shards left at the same rate

    slow = RunRecorder(lake, "label-r3", job="label", config={}, started_at=now(), recipes=None, shards_total=1,
                       every_s=3600)
    slow.record("running")
    assert not slow.progress(1, lambda: {})  # within every_s of the last record: no commit to the runs table
    slow.record("interrupted", finished_at=now())

    rec.record("ok", {"shards_committed": 3, "explanations": 120, "fve_nrm": 0.61, "mean_mse": 0.4},
               finished_at=now())
    with LakeQuery(lake) as q:
        history = overview.runs(q)
        assert overview.progress(q, history) == []
    assert [(r["run_id"], r["status"]) for r in history] == [("label-r3", "interrupted"), ("label-r2", "ok")]
    assert history[1]["counts"] == {"shards_total": 3, "shards_committed": 3, "explanations": 120}
    [point] = overview.fve_history(history)
    assert (point["run_id"], point["fve_nrm"], point["mean_mse"], point["recipe"]) == ("label-r2", 0.61, 0.4, "abc1")
    assert json.loads(json.dumps(history, default=str))  # plain data


def test_a_running_row_whose_job_went_quiet_is_shown_as_stalled(lake):
    """A driver killed with SIGKILL leaves its row `running`: past QUIET_S without a commit it is `stalled`, with
    no ETA (the page says the run may be dead and how to resume); a job that just started is not."""
    import datetime as dt

    gone = RunRecorder(lake, "label-gone", job="label", config={}, started_at=now() - dt.timedelta(hours=2),
                       recipes=None, shards_total=4)
    gone.record("running")
    fresh = RunRecorder(lake, "label-fresh", job="label", config={}, started_at=now(), recipes=None, shards_total=4)
    fresh.record("running")
    with LakeQuery(lake) as q:
        got = {p["run_id"]: p for p in overview.progress(q)}
    assert got["label-gone"]["stalled"] and got["label-gone"]["eta_s"] is None
    assert got["label-gone"]["quiet_s"] == pytest.approx(7200, abs=120)
    assert not got["label-fresh"]["stalled"] and got["label-fresh"]["quiet_s"] < overview.QUIET_S


def test_an_empty_lake_has_an_empty_overview(tmp_path):
    from nla.lake.store import Lake

    with LakeQuery(Lake(tmp_path / "none-yet")) as q:
        s = overview.summary(q)
        assert (s["tables"], s["recipes"], s["features"], s["histogram"]["recipes"]) == ([], [], [], {})
        assert overview.runs(q) == [] and overview.progress(q) == [] and overview.recipes(q) == []
