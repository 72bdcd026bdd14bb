"""The labeling job end to end on the toy kit: real local Ray, real Delta tables, real DuckDB, the real CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from nla.labeling.identity import name_of
from nla.lake.query import LakeQuery
from nla.lake.store import Lake


# One AV actor per labeling job here unless a test asks for more: the toy config's second one loads the three toy
# models again, about 10 of a small job's 28 CPU-seconds on 2 cores, for corpora of a few hundred activations. Two
# actors run in tests/reliability/test_faults.py (chained) and tests/infra/test_multinode.py.
ONE_ACTOR = "explainer.concurrency=1"


def _terminal_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def job(*args: str, wait: bool = True, env: dict[str, str] | None = None, **kw):
    """`nla <args>` in a subprocess (env: variables to add, e.g. the Ray cluster to join)."""
    if args and args[0] == "label" and not any(a.startswith("explainer.concurrency=") for a in args):
        args = (*args, ONE_ACTOR)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "nla.cli.main", *args]
    if not wait:  # Ctrl-C as from a terminal: a suite started in the background (`cmd &` in a script) has SIGINT
        # ignored, and an ignored signal stays ignored across exec, so the job would never see the tests' SIGINT
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True, preexec_fn=_terminal_sigint)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, toy_kit):
    from nla.toy.shards import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, docs=90, shards=4, seed=77)
    (root / "part-0004.jsonl").write_bytes(b'{"id": "x1", "text": "a heavy storm moved over oslo last night ."}\n'
                                           b'\xff\xfe not utf8\n{"id": "x2", "text": ""}\n')
    (root / "part-0005.parquet").write_bytes(b"PAR1 corrupt")
    return root


def counts(lake_dir) -> dict:
    q = LakeQuery(Lake(lake_dir))
    out = {}
    for t, key in (("activations", "act_id"), ("explanations", "act_id, av, ar, sample")):
        if t in q.tables:
            out[t] = q.run(f"SELECT count(*) n, count(DISTINCT ({key})) u FROM {t}").to_pylist()[0]
    q.close()
    return out


def test_label_end_to_end_then_rerun(corpus, tmp_path):
    lake = tmp_path / "lake"
    p = job("label", f"input={corpus}", "--lake", str(lake))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "[commit] shard part-0000.jsonl" in out and "skipped shard part-0005.parquet" in out
    assert "fve_nrm" in out and "activations_per_s" in out
    # each commit line says how far the run is; Ray's own progress blocks and plan stay out (nla label --verbose)
    assert re.search(r"^\[commit\] shard part-0000\.jsonl@\w+: .* · [1-6]/6 shards, [\d,]+ activations, [\d,]+/s, "
                     r"(ETA \d+s|done)$", out, re.M), out[-3000:]
    assert "Running Dataset" not in out + p.stderr and "Execution plan" not in out + p.stderr, out[-3000:]
    c = counts(lake)
    assert c["activations"]["n"] == c["activations"]["u"] > 400
    assert c["explanations"]["n"] == c["explanations"]["u"] == c["activations"]["n"]
    q = LakeQuery(Lake(lake))
    run = q.run("SELECT status, counts, throughput FROM runs WHERE job = 'label'").to_pylist()
    assert run[0]["status"] == "ok" and '"bad_documents": 2' in run[0]["counts"]
    assert '"shards_total": 6' in run[0]["counts"]  # recorded at the start, for the explorer's progress panel
    ok = q.run("SELECT avg(mse) m, count(*) FILTER (WHERE status = 'ok') k, count(*) n FROM explanations").to_pylist()
    assert ok[0]["k"] / ok[0]["n"] > 0.95 and ok[0]["m"] < 1.0  # the toy AV explains; the AR reconstructs
    assert {name_of(u) for u in Lake(lake).committed_shards("explanations")} == {f"part-000{i}.jsonl" for i in range(5)}
    query = 'The text is about weather.\n\nIt mentions oslo.\n\nIt ends with "heavy storm".'  # the AV's own form
    found = job("search", query, "-k", "5", "--lake", str(lake))
    assert found.returncode == 0 and found.stdout.count("about weather") >= 3, found.stdout + found.stderr
    # a rerun skips what is committed and duplicates nothing; the corrupt shard, tried again and unreadable again,
    # was all it had to do: it did nothing, and says so with exit 1
    p2 = job("label", f"input={corpus}", "--lake", str(lake))
    assert p2.returncode == 1 and "5 already committed under this recipe, 1 to do" in p2.stdout, p2.stdout[-2000:]
    assert p2.stderr.strip().splitlines()[-1].startswith("error: nothing was labeled: every shard was empty or "
                                                         "unreadable"), p2.stderr[-2000:]
    assert counts(lake) == c


def test_extract_then_label_from_activations(corpus, tmp_path):
    lake, two = tmp_path / "lake", tmp_path / "two"  # two of the corpus's shards: ~270 activations, 2 samples each
    two.mkdir()
    for name in ("part-0000.jsonl", "part-0001.jsonl"):
        (two / name).symlink_to(corpus / name)
    p = job("extract", f"input={two}", "--lake", str(lake))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    c = counts(lake)
    assert "explanations" not in c and c["activations"]["n"] > 200
    p = job("label", "--from-activations", "--lake", str(lake), "sampling.samples=2", "sampling.temperature=1.0")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    c2 = counts(lake)
    assert c2["explanations"]["n"] == c2["explanations"]["u"] == 2 * c["activations"]["n"]
    q = LakeQuery(Lake(lake))
    best = q.run("SELECT count(*) n FROM (SELECT act_id, arg_min(sample, mse) FROM explanations GROUP BY act_id)")
    assert best.column("n")[0].as_py() == c["activations"]["n"]  # the best sample per activation: one query


@pytest.mark.parametrize("args, match", [
    (["input=/nonexistent/corpus"], "no such file"),
    (["models.av=/nonexistent"], "config.json|sidecar|no such"),
    (["sampling.sample=2"], "Did you mean"),
    (["bogus"], "KEY=VALUE"),
])
def test_bad_job_input(corpus, tmp_path, args, match):
    p = job("label", f"input={corpus}", "--lake", str(tmp_path / "lake"), *args)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert re.search(match, p.stderr), p.stderr
    assert not (tmp_path / "lake").exists() or not Lake(tmp_path / "lake").names()


# Kills of the driver and of every actor mid-run, each followed by a rerun, are in tests/reliability/test_faults.py:
# they compare the lake with an undisturbed reference byte for byte (the chained run with two AV actors).


def test_every_av_batch_failed_is_an_error_and_nothing_is_marked_done(corpus, tmp_path):
    """Activations the AV cannot explain (all-zero vectors have no direction to inject): every AV batch fails, so the
    job ends non-zero with one line saying so, and no shard is marked done (a rerun with good vectors labels them)."""
    import numpy as np

    from tests.inprocess import extract

    lake, one = tmp_path / "lake", tmp_path / "one"
    one.mkdir()
    (one / "part-0000.jsonl").write_bytes((corpus / "part-0000.jsonl").read_bytes())
    # what `nla extract` commits, with every vector zeroed (the job's plan, stage and committer, in this process)
    extract(one, lake, edit=lambda batch: {**batch, "vector": np.zeros_like(batch["vector"])})
    p = job("label", "--from-activations", "--lake", str(lake))
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nothing was labeled: every AV batch failed (") and "all zeros" in last, last
    assert "Fix the cause and rerun" in last or "fix the cause and rerun" in last, last
    assert [r["table_name"] for r in Lake(lake).ledger()] == ["activations"]  # explanations: nothing marked done
