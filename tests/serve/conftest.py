"""One real `nla serve` for the serve tests: the toy kit, a lake labeled by the real stages, a bearer token.

The lake is labeled in-process with the labeling job's own stage classes and shard committer (no Ray: the job's
end-to-end test covers Ray Data), so the server starts within seconds of the kit being ready. The server is the
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


def label_lake(kit: Path, root: Path, *, docs: int = 48) -> Path:
    """A small lake labeled by the toy kit: toy corpus -> ReadShard -> ExtractStage -> ExplainStage -> ScoreStage."""
    from nla.labeling.committer import ShardCommitter
    from nla.labeling.corpus import list_shards
    from nla.lake.store import Lake
    from nla.stages.explain import ExplainStage
    from nla.stages.extract import ExtractStage
    from nla.stages.read import ReadShard
    from nla.stages.score import ScoreStage
    from nla.toy.shards import write_corpus

    write_corpus(root / "corpus", docs=docs, shards=2, seed=5)
    shards = list_shards(str(root / "corpus"))
    read = ReadShard(id_column="id")
    extract = ExtractStage(base=str(kit / "base"), base_id="toy/base",
                           config={"layer": 1, "min_position": 8, "positions_per_doc": 4})
    explain = ExplainStage(av=str(kit / "av"), sampling={"temperature": 0.0, "max_new_tokens": 64})
    score = ScoreStage(ar=str(kit / "ar"))
    lake = Lake(root / "lake")
    committer = ShardCommitter(lake, [s.id for s in shards], run_id="serve-test", config_hash="t", base_id="toy/base",
                               layer=1, d=extract.d, av_id="toy/av", ar_id="toy/ar", log=lambda *_: None)
    items = {"shard": np.array([s.id for s in shards], object), "path": np.array([s.path for s in shards], object),
             "format": np.array([s.format for s in shards], object)}
    for docs_batch in read(items):
        committer.add(score(explain(extract(docs_batch))))
    committer.finish()
    return root / "lake"


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
