"""Serving load benchmark: N concurrent clients on loopback for S seconds, a mix of every endpoint.

    .venv/bin/python bench/serve_load.py                          # 50 clients x 30 s on a fresh `nla serve`
                                                                  # (--config serve/config.yaml)
    .venv/bin/python bench/serve_load.py --clients 20 --seconds 10
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 # an already running server (NLA_API_TOKEN read)

Without --url it labels a toy corpus with the real job (`nla toy corpus`, `nla label`; the lake is kept under
bench/.serve and reused), starts `nla serve` on it, and stops it at the end. Each client loops: pick an endpoint by weight, send, wait
for the answer, repeat; the load generator shares the machine's cores with the server. Prints throughput, p50/p99
latency overall and per endpoint and the count of 5xx answers; writes bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".serve"
RESULTS = ROOT / "bench" / "results" / "serve_load.json"
SEARCH = 'The text is about weather.\n\nIt mentions oslo.\n\nIt ends with "heavy storm".'
# endpoint -> weight in the mix; model endpoints dominate, as they would for users of the page
WEIGHTS = {"explain_vectors": 22, "explain_text": 10, "extract": 10, "reconstruct": 10, "score": 10, "compare": 5,
           "search_text": 10, "search_keyword": 5, "query": 10, "models": 4, "healthz": 4}


def nla(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nla.cli.main", *args], cwd=ROOT, text=True, env=env, **kw)


def labeled_lake(kit: Path) -> Path:
    lake = WORK / "lake"
    if (lake / "explanations").is_dir():
        return lake
    corpus = Path(tempfile.mkdtemp(prefix="nla-serve-corpus-"))  # the job skips inputs under hidden folders
    nla("toy", "corpus", "--out", str(corpus), "--docs", "300", "--seed", "11", check=True)
    p = nla("label", f"input={corpus}", "--lake", str(lake), f"models.base={kit / 'base'}",
            f"models.av={kit / 'av'}", f"models.ar={kit / 'ar'}", capture_output=True)
    shutil.rmtree(corpus)
    if p.returncode:
        sys.exit(f"labeling the bench lake failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return lake


def start_server(kit: Path, lake: Path, port: int, token: str, config: str) -> subprocess.Popen:
    log = (WORK / "serve.log").open("w")
    env = {**os.environ, "NLA_API_TOKEN": token, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nla.cli.main", "serve", "--config", config, "--port", str(port),
                             "--lake", str(lake),
                             f"models.base={kit / 'base'}", f"models.av={kit / 'av'}", f"models.ar={kit / 'ar'}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while "NLA serving" not in (WORK / "serve.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"nla serve did not start:\n{(WORK / 'serve.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


class Mix:
    """Request bodies for each endpoint, built from real texts, vectors and explanations of the served lake."""

    def __init__(self, texts: list[str], vectors: list[list[float]], explanations: list[str]) -> None:
        self.texts, self.vectors, self.explanations = texts, vectors, explanations

    def request(self, name: str, rng: random.Random) -> tuple[str, str, dict | None]:
        t, v, e = rng.choice(self.texts), rng.choice(self.vectors), rng.choice(self.explanations)
        bodies = {
            "explain_vectors": ("/v1/explain", {"vectors": [v], "max_new_tokens": 64}),
            "explain_text": ("/v1/explain", {"text": t, "positions": [3, 6], "max_new_tokens": 64}),
            "extract": ("/v1/extract", {"text": t, "sample": 4}),
            "reconstruct": ("/v1/reconstruct", {"explanations": [e, rng.choice(self.explanations)]}),
            "score": ("/v1/score", {"explanations": [e], "vectors": [v]}),
            "compare": ("/v1/compare", {"a": {"vector": v}, "b": {"vector": rng.choice([w for w in self.vectors
                                                                                      if w != v])},
                                        "max_new_tokens": 64}),
            "search_text": ("/v1/search", {"text": SEARCH, "k": 10}),
            "search_keyword": ("/v1/search", {"keyword": rng.choice(["oslo", "rain|storm", "music", "paris"]),
                                              "k": 20}),
            "query": ("/v1/query", {"sql": "SELECT status, count(*) n, avg(mse) mse FROM explanations GROUP BY 1"}),
        }
        if name in bodies:
            return "POST", *bodies[name]
        return "GET", "/v1/models" if name == "models" else "/healthz", None


async def fetch(session, base: str, method: str, path: str, body: dict | None) -> tuple[int, dict]:
    async with session.request(method, base + path, json=body) as r:
        return r.status, await r.json(content_type=None)


async def prepare(session, base: str) -> Mix:
    sql = "SELECT DISTINCT context AS t, explanation AS e FROM labels WHERE status = 'ok' LIMIT 200"
    _, q = await fetch(session, base, "POST", "/v1/query", {"sql": sql, "limit": 200})
    texts = sorted({r["t"] for r in q["rows"] if len(r["t"].split()) > 8})[:50]
    vectors = []
    for text in texts[:10]:
        _, got = await fetch(session, base, "POST", "/v1/extract", {"text": text, "sample": 5})
        vectors += [a["vector"] for a in got["activations"]]
    unique = list({tuple(v): v for v in vectors}.values())  # texts that share a prefix share its vectors
    return Mix(texts, unique, [r["e"] for r in q["rows"]])


async def client(session, base: str, mix: Mix, seed: int, stop_at: float, out: list) -> None:
    rng = random.Random(seed)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    while time.monotonic() < stop_at:
        name = rng.choices(names, weights)[0]
        method, path, body = mix.request(name, rng)
        t0 = time.perf_counter()
        try:
            status, _ = await fetch(session, base, method, path, body)
        except Exception as e:  # a dropped connection counts as a failure, like a 5xx
            status = f"{type(e).__name__}"
        out.append((name, status, time.perf_counter() - t0))


async def load(base: str, token: str, clients: int, seconds: float) -> tuple[list, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(headers=headers, connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        mix = await prepare(session, base)
        warm_stop = time.monotonic() + 3  # compile paths, fill caches
        await asyncio.gather(*(client(session, base, mix, 1000 + i, warm_stop, []) for i in range(4)))
        out: list = []
        t0 = time.monotonic()
        await asyncio.gather(*(client(session, base, mix, i, t0 + seconds, out) for i in range(clients)))
        return out, time.monotonic() - t0


def summarize(rows: list, wall: float) -> dict:
    def stats(sel: list) -> dict:
        lat = np.array([r[2] for r in sel]) * 1000
        return {"requests": len(sel), "per_s": round(len(sel) / wall, 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
                "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
                "5xx_or_dropped": sum(1 for r in sel if not isinstance(r[1], int) or r[1] >= 500),
                "4xx": sum(1 for r in sel if isinstance(r[1], int) and 400 <= r[1] < 500)}

    return {"overall": stats(rows), "endpoints": {n: stats([r for r in rows if r[0] == n]) for n in WEIGHTS}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running server (default: start one)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--config", default=str(ROOT / "serve" / "config.yaml"), help="server config (without --url)")
    args = ap.parse_args()
    token, proc = os.environ.get("NLA_API_TOKEN", ""), None
    base = args.url
    if base is None:
        from nla.toy.kit import ensure_toy_kit

        WORK.mkdir(parents=True, exist_ok=True)
        kit = ensure_toy_kit()
        lake = labeled_lake(kit)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        token = token or "bench-token"
        proc = start_server(kit, lake, port, token, args.config)
        base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()[0]  # other work on the machine skews the figures: record it
    try:
        rows, wall = asyncio.run(load(base.rstrip("/"), token, args.clients, args.seconds))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    res = summarize(rows, wall)
    print(f"\n{args.clients} clients x {wall:.1f} s on {base} ({os.cpu_count()} CPUs, shared with the load generator)")
    print(f"{'endpoint':<16} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'5xx':>5} {'4xx':>5}")
    for name, s in [*res["endpoints"].items(), ("ALL", res["overall"])]:
        print(f"{name:<16} {s['requests']:>8} {s['per_s']:>7} {s['p50_ms']!s:>8} {s['p99_ms']!s:>8} "
              f"{s['5xx_or_dropped']:>5} {s['4xx']:>5}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"clients": args.clients, "seconds": round(wall, 1), "weights": WEIGHTS,
                                   "server": base if args.url else f"nla serve --config {args.config}",
                                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "loadavg_1min_before": load_before,
                                               "loadavg_1min_after": os.getloadavg()[0]},
                                   **res}, indent=2) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")
    return 1 if res["overall"]["5xx_or_dropped"] else 0


if __name__ == "__main__":
    sys.exit(main())
