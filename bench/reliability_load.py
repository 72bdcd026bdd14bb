"""Reliability under load: the HTTP API under a bounded loopback load of mixed endpoints, then one model replica
killed with SIGKILL while the load goes on. Every request is kept with its start and end time, so each failure is
classed as in flight on the killed replica (expected lost) or not (lost beyond it), and the recovery time is printed.

    .venv/bin/python bench/reliability_load.py                      # 20 clients: 60 s of load, then the AV replica
                                                                    # is killed and the load runs 30 s more
    .venv/bin/python bench/reliability_load.py --clients 8 --seconds 10 --after 10 --replica ar

Starts `nla serve --config serve/config.yaml` on bench/serve_load.py's labeled toy lake (bench/.serve; loopback only)
and stops it at the end; requests and time are bounded by --clients, --seconds and --after. Writes
bench/results/reliability_load.json. tests/reliability/test_serve_load.py runs a 10-second version of the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/serve_load.py: the lake, the server, the mix
import serve_load  # noqa: E402

from nla.sysinfo import process_tree  # noqa: E402

RESULTS = serve_load.ROOT / "bench" / "results" / "reliability_load.json"
# endpoints whose answer needs each model deployment (explain scores with the AR; text inputs go through the base)
USES = {"av": {"explain_vectors", "explain_text", "compare"},
        "ar": {"explain_vectors", "explain_text", "compare", "reconstruct", "score", "search_text"},
        "extractor": {"explain_text", "extract"}}


@dataclass
class Request:
    name: str
    status: int | str  # HTTP status, or the exception's name when the connection failed
    start: float  # time.monotonic()
    end: float

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and self.status < 500


def replica_killer(server_pid: int, deployment: str) -> Callable[[], tuple[str, float]]:
    """A function that SIGKILLs the first replica of `deployment` under the server process and says which, and when
    (time.monotonic() as the signal went: finding the process takes a while on a loaded machine, and requests sent
    meanwhile are still served by it)."""
    def kill() -> tuple[str, float]:
        title = f"ServeReplica:nla:{deployment}"
        pid = next((p for p, cmd in process_tree(server_pid).items() if title in cmd), None)
        if pid is None:
            raise RuntimeError(f"no {title} process under pid {server_pid}")
        at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        return f"{title} (pid {pid})", at

    return kill


async def _client(session, base: str, mix: serve_load.Mix, seed: int, stop_at: float, out: list) -> None:
    rng = random.Random(seed)
    names, weights = list(serve_load.WEIGHTS), list(serve_load.WEIGHTS.values())
    while time.monotonic() < stop_at:
        name = rng.choices(names, weights)[0]
        method, path, body = mix.request(name, rng)
        t0 = time.monotonic()
        try:
            status, _ = await serve_load.fetch(session, base, method, path, body)
        except Exception as e:  # noqa: BLE001 - a dropped connection is a failed request
            status = type(e).__name__
        out.append(Request(name, status, t0, time.monotonic()))


async def load_with_kill(base: str, token: str, *, clients: int, before: float, after: float,
                         kill: Callable[[], tuple[str, float]]) -> tuple[list[Request], float, str]:
    """`clients` loops of mixed requests for before + after seconds; kill() runs at `before`. Returns every request,
    the kill's monotonic time and what was killed."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        mix = await serve_load.prepare(session, base)
        rows: list[Request] = []
        t0 = time.monotonic()
        loops = [asyncio.create_task(_client(session, base, mix, i, t0 + before + after, rows))
                 for i in range(clients)]
        await asyncio.sleep(max(0.0, t0 + before - time.monotonic()))
        what, killed_at = await asyncio.get_running_loop().run_in_executor(None, kill)
        await asyncio.gather(*loops)
        return rows, killed_at, what


def analyse(rows: list[Request], killed_at: float, deployment: str) -> dict:
    """Failures in flight on the killed replica vs lost beyond them, and the recovery time."""
    uses = USES[deployment]
    in_flight = [r for r in rows if r.name in uses and r.start <= killed_at < r.end]
    failed = [r for r in rows if not r.ok]
    beyond = [r for r in failed if r not in in_flight]
    later = sorted((r for r in rows if r.name in uses and r.start >= killed_at and r.ok), key=lambda r: r.end)
    before = [r for r in rows if r.end < killed_at]
    return {"requests": len(rows), "before_kill": serve_load.summarize(
                [(r.name, r.status, r.end - r.start) for r in before], max(1e-9, killed_at - rows[0].start))
            if before else {}, "failed": len(failed), "in_flight_needing_it": len(in_flight),
            "failed_in_flight": len(failed) - len(beyond), "lost_beyond_in_flight": len(beyond),
            "lost_beyond": [f"{r.name} {r.status} at +{r.start - killed_at:.2f}s" for r in beyond][:20],
            "recovery_s": round(later[0].end - killed_at, 2) if later else None,
            "answered_after_kill": sum(1 for r in rows if r.start >= killed_at and r.ok)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0, help="load before the kill")
    ap.add_argument("--after", type=float, default=30.0, help="load after the kill")
    ap.add_argument("--replica", choices=sorted(USES), default="av", help="the deployment whose replica is killed")
    ap.add_argument("--config", default=str(serve_load.ROOT / "serve" / "config.yaml"))
    args = ap.parse_args()
    from nla.toy.kit import ensure_toy_kit

    serve_load.WORK.mkdir(parents=True, exist_ok=True)
    kit = ensure_toy_kit()
    lake = serve_load.labeled_lake(kit)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = os.environ.get("NLA_API_TOKEN") or "bench-token"
    proc = serve_load.start_server(kit, lake, port, token, args.config)
    load_before = os.getloadavg()[0]
    try:
        rows, killed_at, what = asyncio.run(load_with_kill(
            f"http://127.0.0.1:{port}", token, clients=args.clients, before=args.seconds, after=args.after,
            kill=replica_killer(proc.pid, args.replica)))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    res = analyse(rows, killed_at, args.replica)
    print(f"\n{args.clients} clients on loopback: {args.seconds:.0f} s of mixed load, then SIGKILL of {what}, "
          f"{args.after:.0f} s more ({os.cpu_count()} CPUs, shared with the load generator)")
    for k in ("requests", "failed", "in_flight_needing_it", "failed_in_flight", "lost_beyond_in_flight",
              "recovery_s", "answered_after_kill"):
        print(f"  {k:<30} {res[k]}")
    steady = res["before_kill"].get("overall", {})
    print(f"  before the kill: {steady.get('per_s')} req/s, p50 {steady.get('p50_ms')} ms, p99 {steady.get('p99_ms')} "
          f"ms, {steady.get('5xx_or_dropped')} 5xx")
    RESULTS.write_text(json.dumps({"clients": args.clients, "seconds_before_kill": args.seconds,
                                   "seconds_after_kill": args.after, "killed": what, **res,
                                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "loadavg_1min_before": load_before,
                                               "loadavg_1min_after": os.getloadavg()[0]}}, indent=2) + "\n")
    print(f"-> {RESULTS.relative_to(serve_load.ROOT)}")
    return 1 if res["lost_beyond_in_flight"] or res["recovery_s"] is None else 0


if __name__ == "__main__":
    sys.exit(main())
