"""Which ANN library: faiss (PCA + IVF-PQ + exact rerank), usearch (HNSW), Lance (IVF_PQ) on the same vectors.

    nice -n 10 .venv/bin/python bench/search_libs.py --rows 20000 --d 3584

The vectors come from bench/search.py's synthetic activations (held-out queries, unit vectors, cosine top-10).
Each library gets settings aimed at recall@10 >= 0.95; we record build seconds, query p50 (median of all queries),
recall@10 against brute force, and the bytes the index needs in memory or on disk. In-memory arrays, no lake: this
compares libraries, bench/search.py measures the chosen one end to end. Prints a table, writes
bench/results/search_libs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth)]))


def timed_queries(search, queries: np.ndarray) -> tuple[list[list[int]], float]:
    out, times = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(search(q))
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def faiss_ivfpq(x: np.ndarray, queries: np.ndarray) -> dict:
    import faiss

    nlist = int(2 ** round(np.log2(np.sqrt(len(x)))))
    t = time.perf_counter()
    index = faiss.index_factory(x.shape[1], f"PCA256,IVF{nlist},PQ64", faiss.METRIC_L2)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.do_polysemous_training, ivf.cp.niter = False, 10
    index.train(x[:40_000])
    index.add(x)
    build = time.perf_counter() - t
    ivf.nprobe = max(32, nlist // 8)

    faiss.omp_set_num_threads(1)  # as the lake's index searches

    def search(q: np.ndarray) -> list[int]:
        _, cand = index.search(q[None], 200)
        c = cand[0][cand[0] >= 0]
        return c[np.argsort(-(x[c] @ q))][:10].tolist()  # exact rerank (the lake index reads .vec rows)

    found, p50 = timed_queries(search, queries)
    return {"library": f"faiss-cpu {faiss.__version__}", "params": f"PCA256,IVF{nlist},PQ64 nprobe {ivf.nprobe} "
            "rerank 200", "build_s": build, "p50_s": p50, "found": found,
            "index_bytes_in_memory": len(faiss.serialize_index(index))}


def usearch_hnsw(x: np.ndarray, queries: np.ndarray, dtype: str) -> dict:
    import usearch
    from usearch.index import Index

    t = time.perf_counter()
    index = Index(ndim=x.shape[1], metric="cos", dtype=dtype, connectivity=16, expansion_add=128,
                  expansion_search=64)
    index.add(np.arange(len(x)), x, threads=2)
    build = time.perf_counter() - t
    found, p50 = timed_queries(lambda q: index.search(q, 10).keys.tolist(), queries)
    with tempfile.TemporaryDirectory() as tmp:
        index.save(f"{tmp}/i.usearch")
        size = os.path.getsize(f"{tmp}/i.usearch")
    return {"library": f"usearch {usearch.__version__}", "params": f"HNSW M16 ef_add128 ef64 {dtype}",
            "build_s": build, "p50_s": p50, "found": found, "index_bytes_in_memory": size}


def lance_ivfpq(x: np.ndarray, queries: np.ndarray) -> dict:
    import lance
    import pyarrow as pa

    with tempfile.TemporaryDirectory() as tmp:
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
        t = time.perf_counter()
        ds = lance.write_dataset(pa.table({"id": np.arange(len(x)), "vector": vec}), f"{tmp}/v.lance")
        nlist = int(2 ** round(np.log2(np.sqrt(len(x)))))
        ds = ds.create_index("vector", index_type="IVF_PQ", metric="cosine", num_partitions=nlist,
                             num_sub_vectors=x.shape[1] // 16)
        build = time.perf_counter() - t
        nprobes = max(32, nlist // 8)
        found, p50 = timed_queries(lambda q: ds.to_table(columns=["id"], nearest={
            "column": "vector", "q": q, "k": 10, "nprobes": nprobes, "refine_factor": 20}).column("id").to_pylist(),
            queries)
        size = sum(f.stat().st_size for f in Path(tmp, "v.lance", "_indices").rglob("*") if f.is_file())
    return {"library": f"pylance {lance.__version__}", "params": f"IVF_PQ {nlist} lists, {x.shape[1] // 16} "
            f"sub-vectors, nprobes {nprobes}, refine 20", "build_s": build, "p50_s": p50, "found": found,
            "index_bytes_in_memory": size}


def main() -> None:
    from search import Activations

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=3584)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    gen = Activations(args.d)
    x = np.concatenate([gen.rows(s, min(10_000, args.rows - s)) for s in range(0, args.rows, 10_000)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = gen.rows(10**9, args.queries)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    out = ROOT / "bench" / "results" / "search_libs.json"
    runs: list[dict] = []
    for name, fn in [("faiss", lambda: faiss_ivfpq(x, queries)), ("usearch-f16", lambda: usearch_hnsw(x, queries, "f16")),
                     ("usearch-i8", lambda: usearch_hnsw(x, queries, "i8")), ("lance", lambda: lance_ivfpq(x, queries))]:
        try:
            r = fn()
        except Exception as e:  # a library that fails to install or run is reported, not fatal
            runs.append({"name": name, "error": f"{type(e).__name__}: {e}"})
            continue
        r["recall_at_10"] = recall(r.pop("found"), truth)
        runs.append({"name": name, **r})
        print(f"  {name}: {r['build_s']:.1f}s build, p50 {r['p50_s'] * 1e3:.1f} ms, recall {r['recall_at_10']:.3f}",
              flush=True)
        out.write_text(json.dumps({"rows": args.rows, "d": args.d, "queries": args.queries, "machine": machine,
                                   "runs": runs, "command": "bench/search_libs.py " + " ".join(sys.argv[1:])},
                                  indent=2))  # after each library: a slow one cut off leaves the others' numbers
    print(f"\nANN libraries, {args.rows:,} x {args.d} unit vectors, {args.queries} held-out queries, {machine}")
    print(f"{'library':<14} {'build s':>8} {'p50 ms':>7} {'recall@10':>9} {'index MiB':>9}  params")
    for r in runs:
        if "error" in r:
            print(f"{r['name']:<14} failed: {r['error'][:80]}")
            continue
        print(f"{r['name']:<14} {r['build_s']:>8.1f} {r['p50_s'] * 1e3:>7.1f} {r['recall_at_10']:>9.3f} "
              f"{r['index_bytes_in_memory'] / 2**20:>9.1f}  {r['params']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
