"""Search benchmark: cosine top-10 through the ANN index vs an exact scan, at 200,000 and 1,000,000 x d = 3584.

    nice -n 10 .venv/bin/python bench/search.py                        # 200k then 1M rows, bf16, ~7 GB lake
    .venv/bin/python bench/search.py --rows 20000 --d 256 --queries 20   # a quick look

The lake is synthetic but shaped like activations: a shared mean direction with a few outlier dimensions, 2,000
clusters of Zipf-like sizes, each varying along its own 8 directions, plus isotropic noise; vectors
are stored in bf16 as a GPU extraction makes them. Queries are held-out vectors from the same distribution. The lake
grows size by size (the smaller lake is the larger one's prefix); at each size the index is rebuilt from scratch
(`index_build_s`), the ground truth is one exact pass over the lake for all queries at once, and the searches run in
a fresh subprocess through `LakeQuery` (its peak RSS is the search's own). At the smallest size the same rows are
also written as float32 to compare the lake's size and exact-scan time. Prints a table, writes
bench/results/search.json. It measures; it does not assert the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLUSTERS, RANK, SEED = 2000, 8, 0


class Activations:
    """Deterministic clustered vectors: rows(start, n) always returns the same rows for the same start."""

    def __init__(self, d: int) -> None:
        rng = np.random.default_rng(SEED)
        self.d = d
        self.mean = rng.standard_normal(d).astype(np.float32) * 0.5
        self.mean[rng.choice(d, 8, replace=False)] += 12.0  # a few outlier dimensions, as residual streams have
        self.centers = rng.standard_normal((CLUSTERS, d)).astype(np.float32)
        # each cluster varies along its own few directions (a feature's contexts), plus isotropic noise
        self.bases = (rng.standard_normal((CLUSTERS, RANK, d)) * np.sqrt(0.5 / RANK)).astype(np.float32)
        weights = 1.0 / (np.arange(CLUSTERS) + 10.0)  # Zipf-like cluster sizes
        self.p = weights / weights.sum()

    def rows(self, start: int, n: int) -> np.ndarray:
        """(n, d) float32; per-dimension variance: centre 1, the cluster's own subspace 0.5, noise 0.09."""
        rng = np.random.default_rng([SEED, start])
        c = rng.choice(CLUSTERS, n, p=self.p)
        z = rng.standard_normal((n, RANK)).astype(np.float32)
        out = self.mean + self.centers[c] + rng.standard_normal((n, self.d), dtype=np.float32) * 0.3
        for i in range(0, n, 1024):  # bounded memory: bases[c] is (rows, RANK, d)
            out[i:i + 1024] += np.einsum("nr,nrd->nd", z[i:i + 1024], self.bases[c[i:i + 1024]])
        return out


def grow(lake_dir: Path, gen: Activations, rows: int, shard_rows: int, dtype: str) -> None:
    """Append shards until the lake holds `rows` rows (shards already there are kept)."""
    from nla.lake.rows import activation_table
    from nla.lake.store import Lake
    from nla.schemas import ACTIVATIONS

    lake = Lake(lake_dir)
    have = lake.committed_shards(ACTIVATIONS.name)
    for start in range(0, rows, shard_rows):
        shard = f"s{start // shard_rows:05d}"
        if shard in have:
            continue
        n = min(shard_rows, rows - start)
        cols = dict(doc_id=[f"doc{start + i}" for i in range(n)], position=np.full(n, 5), token_id=np.zeros(n),
                    token=[" tok"] * n, context=[f"synthetic row {start + i}" for i in range(n)],
                    vector=gen.rows(start, n))
        lake.commit_shard(ACTIVATIONS, activation_table(cols, base_model="bench", layer=20, shard=shard,
                                                        run_id="bench", vector_dtype=dtype),
                          shard=shard, run_id="bench")
        print(f"  shard {shard}: {start + n:,} rows", flush=True)


def ground_truth(lake_dir: Path, queries: np.ndarray, k: int) -> tuple[list[list[str]], float]:
    """Exact top-k act_ids of every query in one streaming pass, and the pass's seconds."""
    from nla.lake.schema import vectors_from_arrow
    from nla.lake.search import table_dataset
    from nla.lake.store import Lake

    t0 = time.perf_counter()
    ds, _ = table_dataset(Lake(lake_dir), "activations")
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.full((len(qn), 0), -2.0, np.float32)
    best_ids = np.empty((len(qn), 0), object)
    for b in ds.to_batches(columns=["act_id", "vector"], batch_size=16_384, batch_readahead=1, fragment_readahead=1):
        v = vectors_from_arrow(b.column(1))
        sims = (qn @ v.T) / np.maximum(np.linalg.norm(v, axis=1), 1e-12)  # (Q, n)
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        bid = np.asarray(b.column(0).to_pylist(), object)
        best = np.concatenate([best, np.take_along_axis(sims, top, 1)], 1)
        best_ids = np.concatenate([best_ids, bid[top]], 1)
        order = np.argsort(-best, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(best, order, 1), np.take_along_axis(best_ids, order, 1)
    return [list(r) for r in best_ids], time.perf_counter() - t0


CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from nla.sysinfo import peak_rss_mb
lake, qfile, exact_runs = sys.argv[2], sys.argv[3], int(sys.argv[4])
qs = np.load(qfile)
t0 = time.perf_counter()
q = LakeQuery(Lake(lake))
first = q.nearest(qs[0], 10)
load_s = time.perf_counter() - t0
times, got, methods = [], [], set()
for v in qs:
    t = time.perf_counter(); top = q.nearest(v, 10); times.append(time.perf_counter() - t)
    got.append(top.column("act_id").to_pylist()); methods.add(q.last_search.method)
rss = peak_rss_mb()
exact = []
for v in qs[:exact_runs]:
    t = time.perf_counter(); q.nearest(v, 10, exact=True); exact.append(time.perf_counter() - t)
print(json.dumps({"times": times, "ids": got, "methods": sorted(methods), "open_and_first_s": load_s,
                  "peak_rss_mb": rss, "peak_rss_with_exact_mb": peak_rss_mb(), "exact": exact}))
"""


def search_child(lake_dir: Path, queries: np.ndarray, exact_runs: int) -> dict:
    qfile = lake_dir.parent / "queries.npy"
    np.save(qfile, queries)
    p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(lake_dir), str(qfile), str(exact_runs)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_size(lake_dir: Path, gen: Activations, rows: int, args: argparse.Namespace, queries: np.ndarray) -> dict:
    from nla.lake.ann import update_index
    from nla.lake.store import Lake

    print(f"\n== {rows:,} rows x d={gen.d} ({args.dtype}) ==", flush=True)
    t0 = time.perf_counter()
    grow(lake_dir, gen, rows, args.shard_rows, args.dtype)
    print(f"  lake ready in {time.perf_counter() - t0:.0f}s; building the index ...", flush=True)
    report = update_index(Lake(lake_dir), rebuild=True, progress=False)
    truth, truth_s = ground_truth(lake_dir, queries, 10)
    r = search_child(lake_dir, queries, args.exact_runs)
    recall = np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(r["ids"], truth)])
    from nla.lake.index_files import IndexFiles

    m = IndexFiles(Lake(lake_dir), "activations").manifest()
    return {"rows": rows, "d": gen.d, "vector_dtype": args.dtype,
            "index": {"library": f"faiss-cpu {__import__('faiss').__version__}", "kind": m.kind, **m.params},
            "index_build_s": round(report.seconds, 1), "index_bytes": dir_bytes(lake_dir / "_index"),
            "lake_bytes": dir_bytes(lake_dir / "activations"),
            "p50_s": float(np.median(r["times"])), "p95_s": float(np.percentile(r["times"], 95)),
            "open_and_first_s": r["open_and_first_s"], "methods": r["methods"],
            "exact_p50_s": float(np.median(r["exact"])), "exact_runs": len(r["exact"]),
            "recall_at_10": float(recall), "queries": len(queries), "peak_rss_mb": r["peak_rss_mb"],
            "peak_rss_with_exact_mb": r["peak_rss_with_exact_mb"], "ground_truth_pass_s": round(truth_s, 1)}


def dtype_compare(base: Path, gen: Activations, rows: int, args: argparse.Namespace, queries: np.ndarray) -> dict:
    """The same rows in float32 and bf16: lake bytes and one exact scan's seconds (median of exact_runs)."""
    out = {}
    for dtype in ("float32", "bfloat16"):
        lake_dir = base / f"dtype_{dtype}"
        grow(lake_dir, gen, rows, args.shard_rows, dtype)
        r = search_child(lake_dir, queries[: args.exact_runs], args.exact_runs)  # no index: every search is exact
        out[dtype] = {"lake_bytes": dir_bytes(lake_dir / "activations"), "exact_p50_s": float(np.median(r["exact"]))}
        shutil.rmtree(lake_dir)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="200000,1000000", help="lake sizes, comma-separated, ascending")
    ap.add_argument("--d", type=int, default=3584)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--shard-rows", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=100, help="held-out query vectors (index p50/p95, recall)")
    ap.add_argument("--exact-runs", type=int, default=3, help="exact scans timed per size (median reported)")
    ap.add_argument("--dtype-compare-rows", type=int, default=50_000, help="rows of the float32 vs bf16 comparison")
    ap.add_argument("--lake", default=str(ROOT / "bench" / ".search-lake"))
    ap.add_argument("--keep", action="store_true", help="keep the lake afterwards (default: delete it)")
    args = ap.parse_args()

    sizes = [int(x) for x in args.rows.split(",")]
    base = Path(args.lake)
    lake_dir = base / f"d{args.d}_{args.dtype}"
    gen = Activations(args.d)
    queries = gen.rows(10**9, args.queries)  # held out: far past any row the lake holds
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    results = {"machine": machine, "sizes": [], "goals": {"p50_s": 0.05, "recall_at_10": 0.95,
                                                          "peak_rss_mb": 4096, "index_build_s": 900}}
    try:
        results["dtype_compare"] = {"rows": args.dtype_compare_rows,
                                    **dtype_compare(base, gen, args.dtype_compare_rows, args, queries)}
        for rows in sizes:
            results["sizes"].append(measure_size(lake_dir, gen, rows, args, queries))
            _write(results, args)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    _write(results, args)
    print(f"\nsearch benchmark, {machine}; {args.queries} held-out queries, top-10, {args.dtype} vectors")
    print(f"{'rows':>10} {'d':>5} {'build s':>8} {'index GiB':>9} {'p50 s':>7} {'p95 s':>7} {'exact p50 s':>11} "
          f"{'recall@10':>9} {'peak RSS MiB':>12}")
    for s in results["sizes"]:
        print(f"{s['rows']:>10,} {s['d']:>5} {s['index_build_s']:>8.0f} {s['index_bytes'] / 2**30:>9.2f} "
              f"{s['p50_s']:>7.4f} {s['p95_s']:>7.4f} {s['exact_p50_s']:>11.2f} {s['recall_at_10']:>9.3f} "
              f"{s['peak_rss_mb']:>12.0f}")
    dc = results["dtype_compare"]
    print(f"float32 vs bf16 at {dc['rows']:,} rows: lake {dc['float32']['lake_bytes'] / 2**20:.0f} vs "
          f"{dc['bfloat16']['lake_bytes'] / 2**20:.0f} MiB, exact scan {dc['float32']['exact_p50_s']:.2f} vs "
          f"{dc['bfloat16']['exact_p50_s']:.2f} s")


def _write(results: dict, args: argparse.Namespace) -> None:
    out = ROOT / "bench" / "results" / "search.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    largest = results["sizes"][-1] if results["sizes"] else {}  # the top-level fields: the largest size measured
    out.write_text(json.dumps({**largest, **results, "command": "bench/search.py " + " ".join(sys.argv[1:])},
                              indent=2))
    print(f"  wrote {out}", flush=True)


if __name__ == "__main__":
    main()
