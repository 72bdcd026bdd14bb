"""Labeling pipeline benchmark on the toy kit: end-to-end activations/s vs the stages' pure model time, and memory.

    .venv/bin/python bench/pipeline.py                  # 5,000 activations (1x) and 25,000 (5x)
    .venv/bin/python bench/pipeline.py --activations 2000 --scale 3
    ray start --head --num-cpus 2 --include-dashboard false && \
      .venv/bin/python bench/pipeline.py --ray-address auto --scale 1 --out bench/results/pipeline_warm.json

Pure model time: the same rows through ReadShard -> ExtractStage -> ExplainStage -> ScoreStage in this process, one
after another, no Ray, timed per stage. End to end: `python -m nla.jobs.label` (local Ray, the toy config) on a fresh
lake, timed by the job itself (Ray start, actor start-up and model loads included). overhead = end-to-end seconds /
sum of pure stage seconds (1.0 = no overhead; < 1 = the pipeline overlaps stages), against both the standalone
run and the model time the stages measured inside the pipeline (which includes their contention for the cores).
Peak RSS is the driver's (VmHWM); flat from 1x to 5x means the driver streams.

Start-up: the same job on 2 documents (12 activations): Ray's start (none with --ray-address), the actors' processes
and model loads, the first and last commits. floor = (start-up + the one-thread model seconds / cores) / standalone
model seconds: the overhead of a pipeline that, once started, kept every core busy with one-thread model work (the
best any layout can do here); a goal below the floor cannot be met on this machine at that size.
Prints a table, writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
POSITIONS = 6  # the toy config's positions_per_doc


def pure_stage_seconds(corpus: Path, threads: int) -> dict[str, float]:
    import numpy as np
    import torch

    from nla.config import load_config
    from nla.extract_config import ExtractConfig
    from nla.labeling.config import LabelConfig
    from nla.labeling.corpus import list_shards
    from nla.settings import SamplingSettings
    from nla.stages.explain import ExplainStage
    from nla.stages.extract import ExtractStage
    from nla.stages.read import ReadShard
    from nla.stages.score import ScoreStage
    from nla.toy.kit import ensure_toy_kit

    cfg = load_config(LabelConfig, ROOT / "jobs/configs/toy.yaml")
    kit = ensure_toy_kit()
    torch.set_num_threads(threads)
    s = cfg.sampling
    read = ReadShard(text_column="text", id_column="id", batch_docs=cfg.read.batch_size)
    extract = ExtractStage(base=str(kit / "base"), base_id="bench", config=ExtractConfig(
        layer=1, positions_per_doc=cfg.extract.positions_per_doc, min_position=cfg.extract.min_position,
        batch_size=cfg.extractor.batch_size))
    explain = ExplainStage(av=str(kit / "av"), batch_size=cfg.explainer.batch_size, sampling=SamplingSettings(
        samples=s.samples, temperature=s.temperature, max_new_tokens=s.max_new_tokens, seed=0))
    score = ScoreStage(ar=str(kit / "ar"), batch_size=cfg.scorer.batch_size)
    shards = list_shards(str(corpus))
    items = {"shard": np.array([x.id for x in shards], object), "path": np.array([x.path for x in shards], object),
             "format": np.array([x.format for x in shards], object)}
    t = {"read": 0.0, "extract": 0.0, "explain": 0.0, "score": 0.0}
    rows = 0
    t0 = time.perf_counter()
    for docs in read(items):
        t["read"] += time.perf_counter() - t0
        for name, fn in (("extract", extract), ("explain", explain), ("score", score)):
            t1 = time.perf_counter()
            docs = fn(docs)
            t[name] += time.perf_counter() - t1
        rows += int((docs["status"] == "ok").sum())
        t0 = time.perf_counter()
    return {**t, "activations": rows, "model": t["extract"] + t["explain"] + t["score"]}


def end_to_end(corpus: Path, lake: Path, overrides: list[str], address: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if address:
        env["RAY_ADDRESS"] = address
    p = subprocess.run([sys.executable, "-m", "nla.jobs.label", "--config", "jobs/configs/toy.yaml", f"input={corpus}",
                        f"lake={lake}", *overrides], cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake

    with LakeQuery(Lake(lake)) as q:
        row = q.run("SELECT counts, throughput FROM runs WHERE job = 'label'").to_pylist()[0]
    return {**json.loads(row["counts"]), **json.loads(row["throughput"])}


def fingerprint_cost(folder: Path, corpus: Path | None = None, mib: int = 1024) -> dict:
    """What knowing shards by content costs the driver: streamed blake2b of one `mib` MiB file (median of 3, warm
    page cache, as a rerun sees it) and of the run's corpus; peak RSS stays flat (4 MiB pieces)."""
    import resource
    import statistics

    from nla.labeling.corpus import list_shards
    from nla.labeling.identity import file_fingerprint

    big = folder / "big.bin"
    with big.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(2**20))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        t = time.perf_counter()
        file_fingerprint(str(big))
        times.append(time.perf_counter() - t)
    big.unlink()
    out = {"file_mib": mib, "file_seconds_median": statistics.median(times),
           "mib_per_s": mib / statistics.median(times),
           "peak_rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}
    if corpus is not None:
        t = time.perf_counter()
        shards = [s.fingerprinted() for s in list_shards(str(corpus))]
        out.update(corpus_shards=len(shards), corpus_bytes=sum(s.size or 0 for s in shards),
                   corpus_seconds=time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activations", type=int, default=5000)
    ap.add_argument("--scale", type=int, default=5, help="the memory check reruns at this multiple of the rows")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for the job, e.g. fuse=false (the chained stages)")
    ap.add_argument("--ray-address", default="", metavar="ADDR",
                    help="run the jobs on this running Ray cluster (e.g. auto after `ray start --head`); default: "
                         "each job starts its own local Ray, as `nla label` does")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline.json"))
    ap.add_argument("--fingerprint-only", action="store_true",
                    help="measure only what fingerprinting shards costs, into the results' 'fingerprint' entry")
    args = ap.parse_args()
    if args.fingerprint_only:
        out = Path(args.out)
        results = json.loads(out.read_text()) if out.exists() else {}
        with tempfile.TemporaryDirectory() as tmp:
            from nla.toy.shards import write_corpus

            write_corpus(Path(tmp) / "corpus", docs=4000, shards=8, seed=9)
            fp = fingerprint_cost(Path(tmp), Path(tmp) / "corpus")
        results["fingerprint"] = {**fp, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                  "date": time.strftime("%Y-%m-%d"),
                                  "command": ".venv/bin/python bench/pipeline.py --fingerprint-only"}
        print(f"fingerprint: {fp['file_mib']} MiB in {fp['file_seconds_median']:.2f} s ({fp['mib_per_s']:.0f} MiB/s, "
              f"peak RSS +{fp['peak_rss_growth_mib']:.0f} MiB); the toy corpus ({fp['corpus_shards']} shards, "
              f"{fp['corpus_bytes'] / 2**20:.1f} MiB) in {fp['corpus_seconds']:.3f} s")
        out.write_text(json.dumps(results, indent=2))
        return
    from nla.toy.kit import ensure_toy_kit
    from nla.toy.shards import write_corpus

    ensure_toy_kit()
    cores = os.cpu_count() or 1
    from nla.config import load_config
    from nla.labeling.config import LabelConfig

    cfg = load_config(LabelConfig, ROOT / "jobs/configs/toy.yaml", args.set)
    layout = (f"{'fused' if cfg.fuse else 'chained'}, {cfg.explainer.concurrency} "
              f"{'fused' if cfg.fuse else 'AV'} actor(s) of {cfg.explainer.threads or 'default'} torch thread(s)")
    results = {"machine": f"{platform.machine()}, {cores} cores", "layout": layout, "overrides": args.set,
               "ray": args.ray_address or "local Ray per job", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp) / "tiny", docs=2, shards=1, seed=9)
        # on a running cluster the first job also starts Ray Data's helper actors, which stay: time the second
        for i in range(2 if args.ray_address else 1):
            tiny = end_to_end(Path(tmp) / "tiny", Path(tmp) / f"lake_tiny{i}", args.set, args.ray_address)
        startup = results["startup_seconds"] = tiny["seconds"]
        for mult in dict.fromkeys((1, args.scale)):
            docs = args.activations * mult // POSITIONS
            corpus = Path(tmp) / f"corpus{mult}"
            write_corpus(corpus, docs=docs, shards=max(4, 8 * mult), seed=9)
            load_before = os.getloadavg()[0]
            e2e = end_to_end(corpus, Path(tmp) / f"lake{mult}", args.set, args.ray_address)
            in_pipeline = sum(e2e["activations"] / e2e[f"{k}_activations_per_s"]
                              for k in ("extract", "explain", "score"))
            run = {"scale": mult, "documents": docs, "activations": e2e["activations"],
                   "e2e_seconds": e2e["seconds"], "e2e_activations_per_s": e2e["activations_per_s"],
                   "driver_peak_rss_mb": e2e["driver_peak_rss_mb"], "fve_nrm": e2e["fve_nrm"],
                   "in_pipeline_model_seconds": in_pipeline, "overhead_vs_in_pipeline": e2e["seconds"] / in_pipeline,
                   "load_average_before": load_before}
            pure = pure_stage_seconds(corpus, threads=cores)
            model = pure["model"]
            one_thread = pure_stage_seconds(corpus, threads=1)["model"]
            run.update(pure_seconds=pure, pure_model_seconds=model, overhead=e2e["seconds"] / model,
                       one_thread_model_seconds=one_thread, floor=(startup + one_thread / cores) / model,
                       overhead_past_startup=(e2e["seconds"] - startup) / model)
            results["runs"].append(run)
        results["fingerprint"] = fingerprint_cost(Path(tmp), Path(tmp) / f"corpus{args.scale}")
    one = results["runs"][0]
    results["overhead"] = one["overhead"]
    results["overhead_at_scale"] = results["runs"][-1]["overhead"]
    results["rss_growth"] = results["runs"][-1]["driver_peak_rss_mb"] / one["driver_peak_rss_mb"]
    if args.scale == 1:
        results.pop("rss_growth")
    print(f"\nlabeling pipeline on the toy kit, {results['machine']}, {results['ray']}; start-up (12 activations) "
          f"{startup:.1f} s")
    print(f"{'scale':>5} {'activations':>11} {'e2e s':>7} {'act/s':>7} {'standalone model s':>19} {'overhead':>9} "
          f"{'floor':>6} {'in-pipeline model s':>20} {'overhead':>9} {'driver RSS MiB':>15}")
    for r in results["runs"]:
        print(f"{r['scale']:>5} {r['activations']:>11} {r['e2e_seconds']:>7.1f} {r['e2e_activations_per_s']:>7.0f} "
              f"{r['pure_model_seconds']:>19.1f} {r['overhead']:>9.2f} {r['floor']:>6.2f} "
              f"{r['in_pipeline_model_seconds']:>20.1f} {r['overhead_vs_in_pipeline']:>9.2f} "
              f"{r['driver_peak_rss_mb']:>15.0f}")
    for r in results["runs"]:
        p = r["pure_seconds"]
        print(f"pure stage seconds ({r['scale']}x): extract {p['extract']:.1f}, explain {p['explain']:.1f}, "
              f"score {p['score']:.1f}; one thread: {r['one_thread_model_seconds']:.1f} s in all")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results.update(command=" ".join([".venv/bin/python", "bench/pipeline.py", *sys.argv[1:]]),
                   date=time.strftime("%Y-%m-%d"))
    old = json.loads(out.read_text()) if out.exists() else {}
    results["history"] = old.pop("history", []) + ([old] if old.get("runs") else [])  # earlier runs, oldest first
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
