"""Lake benchmark: SQL, keyword search and cosine top-10 over 1,000,000 labeled activations (toy d = 128).

    .venv/bin/python bench/lake.py                      # generate the lake once under bench/.lake, then measure
    .venv/bin/python bench/lake.py --rows 200000        # smaller
    .venv/bin/python bench/lake.py --delta-ext-python /path/to/venv/bin/python   # also time DuckDB's delta_scan
    .venv/bin/python bench/lake.py --lake s3://bucket/bench --rows 200000   # an object-store lake (AWS_* env)

Each query runs in a fresh subprocess, so its peak RSS is that query's own (the table's vectors alone are
rows x d x 4 bytes; bounded memory means the peak stays far below that). Prints a table, writes
bench/results/lake.json. The optional delta_scan comparison needs a Python with duckdb==1.5.5 and the PyPI package
duckdb-extension-delta (the only offline build of the extension; it cannot load in DuckDB 2.x).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS = ("sports", "weather", "cooking", "music", "travel", "science", "finance", "health")
NAMES = ("alice", "bruno", "chen", "dara", "paris", "tokyo", "lima", "cairo", "oslo", "dublin", "quito", "seoul")
QUERIES = {
    "sql_filter_aggregate": "SELECT status, count(*) AS n, avg(mse) AS mse, avg(cos) AS cos FROM explanations "
                            "WHERE mse > 0.5 GROUP BY status ORDER BY n DESC",
    "keyword_search": "SELECT act_id, mse, explanation FROM explanations WHERE explanation ILIKE '%quito%' "
                      "ORDER BY mse LIMIT 20",
    "regex_feature_search": "SELECT count(*) FROM search_features('^It mentions (paris|tokyo)')",
}


def generate(lake_dir: str, rows: int, d: int, shard_rows: int, recipe: str = "") -> None:
    """`rows` labeled activations in shards of `shard_rows`; explanations under `recipe` (a hash, or '')."""
    from nla.av import Generation
    from nla.lake.rows import activation_table, explanation_table, generation_columns
    from nla.lake.store import Lake
    from nla.schemas import ACTIVATIONS, EXPLANATIONS

    lake = Lake(lake_dir)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((len(TOPICS), d)).astype(np.float32) * 2
    for s in range(0, rows, shard_rows):
        n = min(shard_rows, rows - s)
        shard = f"bench-{s // shard_rows:04d}"
        topic = rng.integers(0, len(TOPICS), n)
        vectors = centers[topic] + rng.standard_normal((n, d)).astype(np.float32)
        cols = dict(doc_id=[f"doc{(s + i) // 6}" for i in range(n)], position=[50 + (s + i) % 6 for i in range(n)],
                    token_id=rng.integers(0, 1000, n), token=[" word"] * n,
                    context=[f"a context about {TOPICS[t]}" for t in topic], vector=vectors)
        acts = activation_table(cols, base_model="bench", layer=1, shard=shard, run_id="bench")
        who = rng.integers(0, len(NAMES), n)
        gens = [Generation(f"The text is about {TOPICS[t]}.\n\nIt mentions {NAMES[w]}.\n\nIt ends with \"a word\".",
                           "", "ok", 30) for t, w in zip(topic, who)]
        mse = rng.uniform(0, 2, n).astype(np.float32)
        expl = explanation_table(acts.column("act_id").to_pylist(), **generation_columns(gens), av="bench-av",
                                 ar="bench-ar",
                                 samples=np.zeros(n, int), shard=shard, run_id="bench", mse=mse, cos=1 - mse / 2,
                                 recipe=recipe)
        lake.commit_shard(ACTIVATIONS, acts, shard=shard, run_id="bench")
        lake.commit_shard(EXPLANATIONS, expl, shard=shard, run_id="bench", recipe=recipe)
        print(f"  generated {s + n:,}/{rows:,} rows", flush=True)


def child(lake_dir: str, name: str) -> None:
    """Run one measurement in this (fresh) process and print its JSON."""
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake
    from nla.sysinfo import peak_rss_mb

    q = LakeQuery(Lake(lake_dir), timeout_s=600)
    t0 = time.perf_counter()
    if name == "cosine_top10":
        rng = np.random.default_rng(1)
        out = q.nearest(rng.standard_normal(q.d).astype(np.float32), k=10)
    else:
        out = q.run(QUERIES[name], checked=False)
    seconds = time.perf_counter() - t0
    q.close()
    print(json.dumps({"seconds": seconds, "rows_out": out.num_rows, "peak_rss_mb": peak_rss_mb()}))


DELTA_EXT_CHILD = """
import duckdb, importlib.util, json, pathlib, sys, time
pkg = pathlib.Path(importlib.util.find_spec("duckdb_extension_delta").origin).parent
ext = next(pkg.glob(f"extensions/v{duckdb.__version__}/delta.duckdb_extension"))
con = duckdb.connect(); con.load_extension(str(ext))
lake, sql = sys.argv[1], sys.argv[2]
for t in ("explanations", "activations"):
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM delta_scan('{lake}/{t}')")
t0 = time.perf_counter(); rows = con.execute(sql).fetchall(); s = time.perf_counter() - t0
hwm = [l for l in pathlib.Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")]
print(json.dumps({"seconds": s, "rows_out": len(rows), "peak_rss_mb": int(hwm[0].split()[1]) / 1024}))
"""


def measure(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--lake", default=str(ROOT / "bench" / ".lake"))
    ap.add_argument("--repeat", type=int, default=3, help="runs per query; the best is reported")
    ap.add_argument("--delta-ext-python", help="a Python with duckdb==1.5.5 + duckdb-extension-delta")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)

    from nla.lake.store import Lake

    lake_dir = f"{args.lake.rstrip('/')}/rows{args.rows}_d{args.d}"
    if not Lake(lake_dir).exists("explanations"):
        print(f"generating {args.rows:,} labeled activations (d={args.d}) in {lake_dir} ...")
        t0 = time.perf_counter()
        generate(lake_dir, args.rows, args.d, args.shard_rows)
        print(f"  done in {time.perf_counter() - t0:.0f}s")
    results = {"rows": args.rows, "d": args.d, "vector_bytes_mb": args.rows * args.d * 4 / 2**20,
               "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
               "engine": "deltalake -> pyarrow dataset registered in DuckDB", "lake": lake_dir, "queries": {}}
    for name in [*QUERIES, "cosine_top10"]:
        runs = [measure([sys.executable, __file__, "--child", str(lake_dir), name]) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        results["queries"][name] = {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    if args.delta_ext_python:
        results["delta_scan"] = {}
        for name, sql in QUERIES.items():
            if "search_features" in sql:
                continue
            runs = [measure([args.delta_ext_python, "-c", DELTA_EXT_CHILD, str(lake_dir), sql])
                    for _ in range(args.repeat)]
            results["delta_scan"][name] = min(runs, key=lambda r: r["seconds"])

    print(f"\nlake benchmark ({lake_dir}): {args.rows:,} labeled activations, d={args.d} "
          f"({results['vector_bytes_mb']:.0f} MiB of vectors), {results['machine']}")
    print(f"{'query':<24} {'seconds':>8} {'peak RSS MiB':>13} {'rows out':>9}" +
          (f" {'delta_scan s':>13}" if args.delta_ext_python else ""))
    for name, r in results["queries"].items():
        ext = results.get("delta_scan", {}).get(name)
        print(f"{name:<24} {r['seconds']:>8.3f} {r['peak_rss_mb']:>13.0f} {r['rows_out']:>9}" +
              (f" {ext['seconds']:>13.3f}" if ext else (" " * 14 if args.delta_ext_python else "")))
    out = ROOT / "bench" / "results" / ("lake.json" if "://" not in lake_dir else "lake-object-store.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
