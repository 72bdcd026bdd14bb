"""Explorer benchmark: the web page's lake views over 1,000,000 labeled activations, through a real `nla serve`.

    nice -n 10 .venv/bin/python bench/explorer.py                 # generate the lake once under bench/.lake, measure
    .venv/bin/python bench/explorer.py --rows 100000 --repeat 3   # a quick look

The lake is bench/lake.py's (d = 128: no explorer view reads a vector) under one recipe, plus a second recipe's
explanations of the first half of the shards (the pairs `compare` reads) and a third recipe's of a few thousand rows
written by a run left `running` with 4 of its 10 shards committed (what the progress panel reads); the finished runs
are recorded with their figures. `nla serve` (toy kit, default config: one lake replica, DuckDB capped at 1 GB)
serves it, and one client asks each endpoint `--repeat` times; the first answer is reported apart (the overview's
aggregates and a comparison are computed then, and kept until a table changes). Prints a table, writes bench/results/explorer.json. It measures; it does not
assert goals.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE_A, RECIPE_B, RECIPE_C = "a0a0a0a0a0a0a0a0", "b1b1b1b1b1b1b1b1", "c2c2c2c2c2c2c2c2"


def build(lake_dir: str, rows: int, d: int, shard_rows: int) -> None:
    """bench/lake.py's lake under RECIPE_A, RECIPE_B on the first half of its shards, a running run under RECIPE_C."""
    import pyarrow.dataset as pds

    from bench.lake import generate
    from nla.av import Generation
    from nla.labeling.progress import RunRecorder
    from nla.lake.rows import explanation_table, generation_columns
    from nla.lake.store import Lake, now
    from nla.schemas import ACTIVATIONS, EXPLANATIONS

    generate(lake_dir, rows, d, shard_rows, recipe=RECIPE_A)
    lake = Lake(lake_dir)
    acts = lake.table(ACTIVATIONS.name).to_pyarrow_dataset()
    shards = sorted({f"bench-{s // shard_rows:04d}" for s in range(0, rows, shard_rows)})
    rng = np.random.default_rng(1)

    def relabel(shard: str, recipe: str, run_id: str, limit: int | None = None) -> int:
        ids = acts.to_table(columns=[ACTIVATIONS.col.act_id], filter=pds.field("shard") == shard).column(0)
        ids = ids.slice(0, limit).to_pylist() if limit else ids.to_pylist()
        mse = rng.uniform(0, 2, len(ids)).astype(np.float32)
        gens = [Generation(f"The text is about sports.\n\nIt mentions row {i % 97}.", "", "ok", 20)
                for i in range(len(ids))]
        expl = explanation_table(ids, **generation_columns(gens), av="bench-av-2", ar="bench-ar",
                                 samples=np.zeros(len(ids), int), shard=shard, run_id=run_id, mse=mse, cos=1 - mse / 2,
                                 recipe=recipe)
        lake.commit_shard(EXPLANATIONS, expl, shard=shard, run_id=run_id, recipe=recipe)
        return len(ids)

    def recorder(run_id: str, recipe: str, total: int) -> RunRecorder:
        return RunRecorder(lake, run_id, job="label", config={"bench": "explorer"}, started_at=now(), every_s=0,
                           recipes={EXPLANATIONS.name: {"hash": recipe, "fields": {"sampling": {"temperature": 0.0}}}},
                           shards_total=total)

    recorder("label-bench-a", RECIPE_A, len(shards)).record(
        "ok", {"explanations": rows, "fve_nrm": 0.52, "mean_mse": 0.98}, finished_at=now())
    b = recorder("label-bench-b", RECIPE_B, len(shards) // 2)
    b.record("running")
    n = sum(relabel(s, RECIPE_B, "label-bench-b") for s in shards[: len(shards) // 2])
    b.record("ok", {"explanations": n, "fve_nrm": 0.47, "mean_mse": 1.0}, finished_at=now())
    c = recorder("label-bench-running", RECIPE_C, 10)
    c.record("running")
    for s in shards[:4]:
        relabel(s, RECIPE_C, "label-bench-running", limit=1000)
    c.progress(4, lambda: {"shards_committed": 4, "explanations": 4000})
    print(f"  second recipe: {n:,} explanations; a run left running with 4 of 10 shards committed", flush=True)


def call(url: str, path: str, body: dict | None) -> tuple[float, int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        raw = r.read()
    return time.perf_counter() - t0, len(raw), json.loads(raw)


def start_server(lake_dir: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nla.cli.main", "serve", "--port", str(port), "--lake", lake_dir],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 300
    while "NLA serving" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"nla serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--shard-rows", type=int, default=0, help="rows a shard (default: a tenth of --rows)")
    ap.add_argument("--lake", default=str(ROOT / "bench" / ".lake"))
    ap.add_argument("--repeat", type=int, default=5, help="requests per endpoint; best and median are reported")
    ap.add_argument("--port", type=int, default=8731)
    args = ap.parse_args()

    from nla.lake.store import Lake

    args.shard_rows = args.shard_rows or max(1, args.rows // 10)
    lake_dir = f"{args.lake.rstrip('/')}/explorer_rows{args.rows}_d{args.d}"
    if not Lake(lake_dir).exists("runs"):
        print(f"generating {args.rows:,} labeled activations (d={args.d}) in {lake_dir} ...", flush=True)
        t0 = time.perf_counter()
        build(lake_dir, args.rows, args.d, args.shard_rows)
        print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    log = Path(lake_dir + ".serve.log")
    proc = start_server(lake_dir, args.port, log)
    url = f"http://127.0.0.1:{args.port}"
    results: dict = {"command": "nice -n 10 .venv/bin/python bench/explorer.py" + (
                         f" --rows {args.rows}" if args.rows != 1_000_000 else ""),
                     "date": dt.date.today().isoformat(),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; client and "
                                "server on the same machine",
                     "rows": args.rows, "d": args.d, "endpoints": {}}
    try:
        results["load_average_before"] = round(os.getloadavg()[0], 1)
        first = call(url, "/v1/lake/labels", {})[2]["rows"][0]
        asks = {
            "overview": ("/v1/lake/overview", None),
            "progress": ("/v1/lake/progress", None),
            "recipes": ("/v1/lake/recipes", None),
            "labels: first page (mse desc)": ("/v1/lake/labels", {}),
            "labels: mse range + keyword, by cos": ("/v1/lake/labels", {"mse_min": 0.5, "mse_max": 1.5,
                                                                         "keyword": "quito", "sort": "cos"}),
            "labels: page 10,000 (offset 500,000)": ("/v1/lake/labels", {"page": 10_000}),
            "labels: one feature": ("/v1/lake/labels", {"feature": "It mentions quito."}),
            "labels: one recipe": ("/v1/lake/labels", {"recipe": RECIPE_B[:6]}),
            "document": ("/v1/lake/document", {"act_id": first["act_id"]}),
            "compare two recipes": ("/v1/lake/compare", {"a": RECIPE_A[:8], "b": RECIPE_B[:8]}),
        }
        for name, (path, body) in asks.items():
            runs = [call(url, path, body) for _ in range(args.repeat)]
            times = [r[0] * 1000 for r in runs]
            results["endpoints"][name] = {"first_ms": times[0], "best_ms": min(times),
                                          "median_ms": statistics.median(times), "kb": runs[0][1] / 1024}
            print(f"  {name}: {min(times):.0f} ms", flush=True)
        o = call(url, "/v1/lake/overview", None)[2]
        results["overview"] = {"explanations": next(t["rows"] for t in o["tables"] if t["name"] == "explanations"),
                               "recipes": len(o["recipes"]), "running_jobs": len(o["progress"])}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nexplorer benchmark ({lake_dir}): {args.rows:,} labeled activations, {results['machine']}")
    print(f"{'endpoint':<40} {'first ms':>9} {'best ms':>8} {'median ms':>10} {'answer KiB':>11}")
    for name, r in results["endpoints"].items():
        print(f"{name:<40} {r['first_ms']:>9.0f} {r['best_ms']:>8.0f} {r['median_ms']:>10.0f} {r['kb']:>11.1f}")
    out = ROOT / "bench" / "results" / ("explorer.json" if args.rows == 1_000_000 else "explorer-small.json.tmp")
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
