"""One real `nla serve` for the serve tests: the toy kit, a lake labeled by the real stages, a bearer token.

The lake is labeled in-process with the labeling job's own plan, stage classes, shard committer and run recorder (no
Ray: the job's end-to-end test covers Ray Data), so the server starts within seconds of the kit being ready.
`Relabel` runs a from-activations job the same way, one shard at a time, for tests that watch a run in progress and
compare two recipes. The server is the
real CLI in a subprocess, shared by every test of the session (tests/serve and tests/reliability: the fixture is in
tests/conftest.py) and stopped with SIGINT at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TOKEN = "test-token-8f3a"
STARTUP_S = 180


def job_config(lake: Path, *overrides: str):
    """The labeling job's config (jobs/configs/toy.yaml) for `lake`, with key=value overrides."""
    from nla.config import load_config
    from nla.labeling.config import LabelConfig, default_config

    return load_config(LabelConfig, default_config(), [f"lake={lake}", "explainer.threads=1", *overrides])


def recorder_for(plan, cfg, run_id: str, **kw):
    """The job's RunRecorder for a plan run in this process (recording every commit: every_s=0)."""
    from dataclasses import asdict

    from nla.labeling.progress import RunRecorder
    from nla.lake.store import now

    return RunRecorder(plan.lake, run_id, job=plan.mode, config={**asdict(cfg), "mode": plan.mode}, started_at=now(),
                       recipes={t: r.describe() for t, r in plan.recipes.items() if t in plan.writes},
                       shards_total=len(plan.todo), every_s=0, **kw)


def label_lake(kit: Path, root: Path, *, docs: int = 48) -> Path:
    """A small lake labeled by the toy kit with the labeling job's plan (its recipes), stages, shard committer and
    run recorder, in this process: toy corpus -> ReadShard -> ExtractStage -> ExplainStage -> ScoreStage."""
    import torch

    from nla.jobs.label import stage_kwargs, summary
    from nla.labeling.committer import ShardCommitter
    from nla.labeling.plan import make_plan
    from nla.lake.store import now
    from nla.stages.explain import ExplainStage
    from nla.stages.extract import ExtractStage
    from nla.stages.read import ReadShard
    from nla.stages.score import ScoreStage
    from nla.toy.shards import write_corpus

    write_corpus(root / "corpus", docs=docs, shards=2, seed=5)
    cfg = job_config(root / "lake", f"input={root / 'corpus'}", "extract.positions_per_doc=4")
    plan = make_plan(cfg, "label")
    kw = stage_kwargs(plan, cfg)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        read = ReadShard(id_column=cfg.id_column)
        extract, explain = ExtractStage(**kw["extract"]), ExplainStage(**kw["explain"])
        score = ScoreStage(**kw["score"])
        recorder = recorder_for(plan, cfg, "label-serve-test")
        recorder.record("running")
        committer = ShardCommitter.for_plan(plan, run_id="label-serve-test", config_hash="t", log=lambda *_: None)
        items = {k: np.array([getattr(s, a) for s in plan.todo], object)
                 for k, a in (("shard", "id"), ("path", "path"), ("format", "format"))}
        for docs_batch in read(items):
            committer.add(score(explain(extract(docs_batch))))
        recorder.record("ok", summary(committer.finish(), time.perf_counter() - t0), finished_at=now())
    finally:
        torch.set_num_threads(threads)
    return root / "lake"


class Relabel:
    """A from-activations run over a lake (another sampling: another recipe beside the first), driven step by step
    in this process with the job's plan, stages, committer and run recorder, so a test can look at it mid-run:
    start() records it running and labels `rows` activations of each of the lake's shards; commit() commits the next
    shard (the committer commits a shard once the next one's rows arrive, as in a streaming run); finish() commits
    the last one and records the run ok."""

    def __init__(self, kit: Path, lake: Path, *, temperature: float, seed: int, rows: int = 8) -> None:
        from nla.jobs.label import stage_kwargs
        from nla.labeling.plan import make_plan

        self.cfg = job_config(lake, f"sampling.temperature={temperature}", f"sampling.seed={seed}")
        self.plan = make_plan(self.cfg, "from-activations")
        self.kw, self.rows = stage_kwargs(self.plan, self.cfg), rows
        self.run_id = f"from-activations-t{temperature}-s{seed}"
        self.batches: list = []

    @property
    def recipe(self) -> str:
        return self.plan.recipe_hash("explanations")

    def start(self) -> None:
        import torch

        from nla.labeling.committer import ShardCommitter
        from nla.stages.explain import ExplainStage
        from nla.stages.read import ReadActivations
        from nla.stages.score import ScoreStage

        plan = self.plan
        self.t0 = time.perf_counter()
        self.recorder = recorder_for(plan, self.cfg, self.run_id)
        self.recorder.record("running")
        self.committer = ShardCommitter.for_plan(plan, run_id=self.run_id, config_hash="t", log=lambda *_: None)
        threads = torch.get_num_threads()
        try:
            explain, score = ExplainStage(**self.kw["explain"]), ScoreStage(**self.kw["score"])
            read = ReadActivations(lake=str(plan.lake.root))
            for s in plan.todo:
                batch = next(read({"shard": np.array([s.id], object)}))
                self.batches.append(score(explain({k: v[: self.rows] for k, v in batch.items()})))
        finally:
            torch.set_num_threads(threads)

    def _record(self) -> None:
        from nla.jobs.label import summary

        st = self.committer.stats
        self.recorder.progress(st.shards_done,
                               lambda: summary(st, time.perf_counter() - self.t0))

    def commit(self) -> None:
        before = self.committer.stats.shards_committed
        while self.batches and self.committer.stats.shards_committed == before:
            self.committer.add(self.batches.pop(0))
        self._record()

    def finish(self) -> None:
        from nla.jobs.label import summary
        from nla.lake.store import now

        for b in self.batches:
            self.committer.add(b)
        stats = self.committer.finish()
        self.recorder.record("ok", summary(stats, time.perf_counter() - self.t0), finished_at=now())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    lake: Path
    pid: int  # the `nla serve` process (its local Ray and the replicas are its descendants)

    def call(self, path: str, body: object = None, *, token: str | None = "default", raw: bytes | None = None,
             method: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
        """(status, JSON body) of one request; the server's token unless told otherwise."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        if token:
            h["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        req = urllib.request.Request(self.url + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                return e.code, json.loads(payload)
            except json.JSONDecodeError:
                return e.code, {"raw": payload.decode("utf-8", "replace")}


def start_server(toy_kit: Path, tmp_path_factory):
    """The `server` fixture's body (tests/conftest.py: one server for the whole session, serve and reliability)."""
    root = tmp_path_factory.mktemp("serve-lake")
    lake = root / "lake"
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "NLA_API_TOKEN": TOKEN}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nla.cli.main", "serve", "--port", str(port), "--lake",
                                 str(lake), f"models.av={toy_kit / 'av'}", f"models.ar={toy_kit / 'ar'}",
                                 f"models.base={toy_kit / 'base'}", "lake_refresh_s=1",
                                 "limits.query_timeout_s=2", "limits.query_memory_limit=64MB",
                                 "limits.max_concurrent_explains=1"],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", TOKEN, lake, proc.pid)
    deadline = time.monotonic() + STARTUP_S
    try:
        label_lake(toy_kit, root)  # while the server starts: it picks the tables up within lake_refresh_s
        while "NLA serving" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nla serve did not start (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        while "explanations" not in srv.call("/v1/models")[1]["lake"]["tables"]:
            assert time.monotonic() < deadline, "the server never saw the labeled lake"
            time.sleep(0.5)
        yield srv
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
