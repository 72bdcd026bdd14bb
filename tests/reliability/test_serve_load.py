"""The HTTP API under a short bounded loopback load of mixed endpoints, with the AV replica killed (SIGKILL) in the
middle: no request may be lost beyond those that were in flight needing the AV, and the AV must answer again.
bench/reliability_load.py runs the same code for 60 s + 30 s; this is its 10-second version."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

from tests.reliability.conftest import report, tree

BENCH = Path(__file__).resolve().parents[2] / "bench" / "reliability_load.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("reliability_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_av_replica_killed_under_load(server):
    bench = bench_module()
    port = server.url.rsplit(":", 1)[1]
    serve_pid = next(p for p, cmd in tree(os.getpid()).items() if " -m nla.serve " in cmd and f"--port {port}" in cmd)
    rows, killed_at, what = asyncio.run(bench.load_with_kill(server.url, server.token, clients=8, before=4.0,
                                                             after=6.0, kill=bench.replica_killer(serve_pid, "av")))
    res = bench.analyse(rows, killed_at, "av")
    assert res["lost_beyond_in_flight"] == 0, res
    assert res["recovery_s"] is not None and res["answered_after_kill"] > 0, res
    status, body = server.call("/v1/explain", {"vectors": [[0.5] * 128], "max_new_tokens": 16})
    assert status == 200 and body["results"][0]["status"], body
    report(f"8 clients x 10 s of mixed requests on loopback ({res['requests']} requests), SIGKILL of {what} at 4 s",
           f"{res['failed']} failed, all {res['failed_in_flight']} in flight needing the AV "
           f"({res['in_flight_needing_it']} were); lost beyond them: {res['lost_beyond_in_flight']}; the AV answered "
           f"again {res['recovery_s']} s after the kill")
