"""Scaling of the labeling job over the GPUs of one host: 1, 2, 4, ... GPUs, one full NLA replica per GPU.

    python3 bench/multigpu.py --out $OUT/multigpu.json        # on a host with several GPUs (ray, deltalake carried)
    .venv/bin/python bench/multigpu.py --tiny                   # CPU smoke test of the whole script (1 and 2 actors)

Models of the Qwen2.5-7B-Instruct shape with random bf16 weights (built as bench/gpu_label.py builds them: the AV
emits a tagged ~150-token explanation, so every row reaches the AR and decoding runs to 150 tokens). For each GPU
count N it runs `python -m nla.jobs.label --config jobs/configs/qwen7b-multigpu.yaml` with the explainer pool at
concurrency N: the fused layout, one actor per GPU holding the extractor, the AV and the AR, each call taking a batch
of documents through all three. The corpus grows with N (the same documents per GPU), so every run lasts about as
long and start-up weighs the same.

Why one replica per GPU and not one pool per stage: a pool per stage needs GPU counts in the ratio of the stages'
GPU time (AV 55%, AR 35%, extraction 11% on the fast path), which 2 or 4 GPUs cannot split without one stage idling,
and fractional actors are packed by Ray, not pinned to a card. A replica per GPU keeps every card busy on all three
models with no hand-offs, so throughput should grow with N until the driver's commits (docs/scale.md quotes their measured rate,
bench/scale_plan.py) or the readers bind.

Scaling efficiency = rate on N GPUs / (N x rate on 1 GPU), from the steady rate (commits between the first and last
tenth of the run; start-up and the last bunch of commits left out) and, beside it, end to end. The JSON's top-level
`scaling_efficiency` is the largest N's steady figure (end to end when a run had fewer than 10 shard commits,
too few for a steady window, as `scaling_efficiency_from` says: the --tiny run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_label import build_folders, run_job, write_corpus  # noqa: E402
from gpu_stages import QWEN7B, TINY  # noqa: E402

CONFIG = ROOT / "jobs/configs/qwen7b-multigpu.yaml"


def gpu_counts(asked: str, available: int) -> list[int]:
    """The GPU counts to run: those asked for that the host has (1 always first, the reference)."""
    counts = sorted({int(x) for x in asked.split(",") if x.strip()} | {1})
    if any(n < 1 for n in counts):
        raise SystemExit(f"--gpus {asked!r}: counts must be >= 1. Fix: e.g. --gpus 1,2,4.")
    return [n for n in counts if n <= available]


def layout(n: int, tiny: bool) -> list[str]:
    """Overrides for N replicas: the fused pool at concurrency N, readers enough to keep them fed."""
    over = ["fuse=true", f"explainer.concurrency={n}", f"read.concurrency={min(2 * n, 16)}"]
    if tiny:  # the same layout on CPU cores: no GPUs, fp32, small batches, one thread per actor
        over += ["models.device=cpu", "models.dtype=float32", "extract.min_position=5", "read.num_cpus=0.1",
                 "extractor.batch_size=8", "explainer.batch_size=16", "scorer.batch_size=16",
                 "explainer.num_gpus=0", "explainer.num_cpus=0.5", "explainer.threads=1"]
    return over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="1,2,4,8", help="GPU counts to run, those above the host's count skipped "
                    "(default 1,2,4,8)")
    ap.add_argument("--docs-per-gpu", type=int, default=1200, help="documents per GPU (10 activations each)")
    ap.add_argument("--shards-per-gpu", type=int, default=12)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU, 1 and 2 actors: a smoke test")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path, help="folder for models, corpora and lakes (default: a temporary one)")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and dev.type != "cuda":
        raise SystemExit("bench/multigpu.py: no CUDA GPU here. Fix: run it on a GPU host, or pass --tiny for the "
                         "CPU smoke test.")
    available = 2 if args.tiny else torch.cuda.device_count()
    counts = gpu_counts("1,2" if args.tiny else args.gpus, available)
    if args.tiny:
        args.docs_per_gpu, args.shards_per_gpu = min(args.docs_per_gpu, 32), min(args.shards_per_gpu, 4)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    cfg_fields, layer = (TINY, 2) if args.tiny else (QWEN7B, 20)
    out_path = args.out or (Path(tempfile.gettempdir()) / "multigpu_tiny.json" if args.tiny
                            else ROOT / "bench/results/multigpu.json")
    work = args.work or Path(tempfile.mkdtemp(prefix="multigpu_"))
    torch.manual_seed(0)
    t_start = time.perf_counter()
    rec: dict = {"gpu": (f"{available} x {torch.cuda.get_device_name(0)}" if dev.type == "cuda"
                         else f"CPU ({os.cpu_count()} cores), actors in place of GPUs"),
                 "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "command": "python3 bench/multigpu.py" + (" --tiny" if args.tiny else f" --gpus {args.gpus}"),
                 "torch": torch.__version__, "config": str(CONFIG.relative_to(ROOT)),
                 "docs_per_gpu": args.docs_per_gpu, "layout": "fused: one actor per GPU with extractor, AV and AR",
                 "runs": []}

    def save() -> None:
        rec["seconds_total"] = time.perf_counter() - t_start
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(rec, indent=2) + "\n")

    rec["models"] = build_folders(work, cfg_fields, layer, dev, dtype)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    for n in counts:
        corpus = work / f"corpus{n}"
        write_corpus(corpus, args.docs_per_gpu * n, args.shards_per_gpu * n, words=60 if args.tiny else 420)
        over = [f"input={corpus}", f"lake={work / f'lake{n}'}", f"models.base={work / 'base'}",
                f"models.av={work / 'av'}", f"models.ar={work / 'ar'}",
                "sampling.max_new_tokens=" + ("12" if args.tiny else "150"), *layout(n, args.tiny)]
        job = run_job(over, env, config=CONFIG)
        s = job["summary"]
        rec["runs"].append({"gpus": n, "documents": args.docs_per_gpu * n, "rc": job["rc"],
                            "activations": s.get("activations"), "seconds": s.get("seconds"),
                            "end_to_end_activations_per_s": s.get("activations_per_s", 0.0),
                            "steady_activations_per_s": job.get("steady_activations_per_s", 0.0),
                            "first_commit_s": job["commits"][0][0] if job["commits"] else None,
                            "commits": len(job["commits"]),
                            "command": job["command"], "log_tail": job["log_tail"]})
        save()
    one = rec["runs"][0]
    for r in rec["runs"]:
        for key in ("steady", "end_to_end"):
            base = one[f"{key}_activations_per_s"] * r["gpus"]
            r[f"efficiency_{key}"] = r[f"{key}_activations_per_s"] / base if base else 0.0
    last = rec["runs"][-1]
    # the steady rate needs enough commits to leave out the first and last tenth; else end to end
    basis = "steady" if all(r["commits"] >= 10 and r["steady_activations_per_s"] > 0 for r in rec["runs"]) \
        else "end_to_end"
    rec["largest_gpus"], rec["scaling_efficiency_from"] = last["gpus"], basis
    rec["scaling_efficiency"] = last[f"efficiency_{basis}"]
    rec["scaling_efficiency_end_to_end"] = last["efficiency_end_to_end"]
    rec["goal_0.9"] = last["gpus"] > 1 and rec["scaling_efficiency"] >= 0.9
    save()
    print(f"\nlabeling job scaling, {rec['gpu']}, fused layout (one replica per GPU)")
    print(f"{'GPUs':>4} {'activations':>11} {'seconds':>8} {'e2e act/s':>10} {'steady act/s':>13} "
          f"{'eff. steady':>12} {'eff. e2e':>9}")
    for r in rec["runs"]:
        print(f"{r['gpus']:>4} {int(r['activations'] or 0):>11} {r['seconds'] or 0:>8.1f} "
              f"{r['end_to_end_activations_per_s']:>10.1f} {r['steady_activations_per_s']:>13.1f} "
              f"{r['efficiency_steady']:>12.2f} {r['efficiency_end_to_end']:>9.2f}")
    print(f"scaling efficiency at {last['gpus']} GPUs ({basis} rate): {rec['scaling_efficiency']:.2f}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
