"""Scale plan: per-stage and per-GPU labeling rates, nodes for a million labels an hour, cost per million labels.

    .venv/bin/python bench/scale_plan.py                          # writes bench/results/scale_plan.json
    .venv/bin/python bench/scale_plan.py --usd-per-gpu-hour 2.5 --node-gpus 8

GPU rates come from bench/results/gpu_stages.json when it exists (bench/gpu_stages.py on an H100: the plain path nla
runs today and the fast path), else from the plain-transformers H100 anchors in ANCHORS below (the shared GPU notes),
marked as such in the output. CPU rates come from bench/results/pipeline.json (toy kit, this 2-core machine). One
measurement is taken here: how fast the driver commits labeled shards at the Qwen2.5-7B width (d = 3584) to a local
lake, the ceiling of one job's driver. This script plans; it runs no model.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PER_HOUR = 1_000_000  # the target: labels (explanations + scores, one sample each) per hour
POSITIONS_PER_DOC = 10  # jobs/configs/qwen7b.yaml extract.positions_per_doc
# Plain-transformers anchors on one H100 at the Qwen2.5-7B shape (random bf16 weights, SDPA), from the shared GPU notes:
# extraction through blocks 0..20 at 32 x 512 tokens; AR over 256 x 165 tokens; AV generate from inputs_embeds,
# 150 new tokens greedy, batch 256.
ANCHORS = {"extract_tokens_per_s": 51_000, "doc_tokens": 512, "ar_per_s": 317.0, "av_per_s": 65.0}


def gpu_rates() -> dict[str, dict]:
    """Stage -> {per_gpu: labels/s on one GPU, source}; 'plain' and, when measured, 'fast' paths."""
    path = RESULTS / "gpu_stages.json"
    if not path.is_file():
        a = ANCHORS
        src = "anchor: plain transformers, H100 (shared GPU notes); placeholder until bench/results/gpu_stages.json"
        return {"plain": {"extract": {"per_gpu": a["extract_tokens_per_s"] / a["doc_tokens"] * POSITIONS_PER_DOC,
                                      "source": src + f"; {a['doc_tokens']}-token documents, {POSITIONS_PER_DOC} "
                                                      "positions each"},
                          "explain": {"per_gpu": a["av_per_s"], "source": src},
                          "score": {"per_gpu": a["ar_per_s"], "source": src}}}
    rec = json.loads(path.read_text())
    ex, av, ar = rec["extraction"], rec["av"], rec["ar"]
    per_token = ex["workload"]["vectors"] / ex["workload"]["real_tokens"]  # activations per document token
    src = f"measured: bench/results/gpu_stages.json ({rec['gpu']}, {rec['date']})"
    return {"plain": {"extract": {"per_gpu": ex["before"]["throughput"] * per_token, "source": src},
                      "explain": {"per_gpu": av["before"]["throughput"], "source": src},
                      "score": {"per_gpu": ar["before"]["throughput"], "source": src}},
            "fast": {"extract": {"per_gpu": ex["throughput"] * per_token, "source": src},
                     "explain": {"per_gpu": av["explanations_per_s"], "source": src},
                     "score": {"per_gpu": ar["throughput"], "source": src}}}


def config_layout(name: str) -> dict[str, float]:
    """GPUs per node that a job config gives each model stage (concurrency x num_gpus)."""
    cfg = yaml.safe_load((ROOT / "jobs" / "configs" / name).read_text())
    return {stage: cfg[key]["concurrency"] * cfg[key]["num_gpus"]
            for stage, key in (("extract", "extractor"), ("explain", "explainer"), ("score", "scorer"))}


def plan(rates: dict[str, dict], node_gpus: int, usd: float, layout: dict[str, float]) -> dict:
    per = {s: r["per_gpu"] for s, r in rates.items()}
    gpu_s = {s: 1.0 / v for s, v in per.items()}  # GPU-seconds one label costs in each stage
    total = sum(gpu_s.values())
    balanced_node = node_gpus / total  # labels/s of a node whose GPUs are split in proportion to gpu_s
    config_node = min(per[s] * layout[s] for s in per)  # labels/s of the config's whole-GPU layout (slowest stage)
    bottleneck = min(per, key=lambda s: per[s] * layout[s])
    need = PER_HOUR / 3600
    return {"per_gpu": per, "gpu_share": {s: g / total for s, g in gpu_s.items()},
            "gpus_per_node_balanced": {s: node_gpus * g / total for s, g in gpu_s.items()},
            "labels_per_s_per_gpu_balanced": 1 / total, "labels_per_s_per_node_balanced": balanced_node,
            "config_layout_gpus": layout, "labels_per_s_per_node_config_layout": config_node,
            "config_layout_bottleneck": bottleneck,
            "nodes_for_1m_per_hour_balanced": math.ceil(need / balanced_node),
            "nodes_for_1m_per_hour_config_layout": math.ceil(need / config_node),
            "gpu_hours_per_1m_labels": PER_HOUR * total / 3600,
            "usd_per_1m_labels": PER_HOUR * total / 3600 * usd,
            "usd_per_1m_labels_config_layout": PER_HOUR / config_node / 3600 * node_gpus * usd}


def cpu_rates() -> dict:
    """Toy kit on this machine: each stage alone (standalone, all cores) and the whole job, from pipeline.json."""
    rec = json.loads((RESULTS / "pipeline.json").read_text())
    run = [r for r in rec["runs"] if "pure_seconds" in r][-1]  # the largest run with standalone stage times
    pure = run["pure_seconds"]
    return {"machine": rec["machine"], "activations": run["activations"],
            "stage_per_s": {s: pure["activations"] / pure[s] for s in ("extract", "explain", "score")},
            "end_to_end_per_s": run["e2e_activations_per_s"], "overrides": rec.get("overrides", [])}


def commit_rate(d: int = 3584, shard_rows: int = 2000, shards: int = 4) -> dict:
    """Labels/s one driver commits (activations + explanations, one shard per commit) to a local lake at width d."""
    from nla.lake.rows import activation_table, explanation_table
    from nla.lake.store import Lake
    from nla.schemas import ACTIVATIONS, EXPLANATIONS

    rng = np.random.default_rng(0)
    text = "The text is about weather. It mentions oslo and a storm. It ends with the word night. " * 2
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(tmp)
        t0 = time.perf_counter()
        for s in range(shards):
            docs = [f"doc{s}-{i // POSITIONS_PER_DOC}" for i in range(shard_rows)]
            cols = {"doc_id": docs, "position": np.arange(shard_rows) % 900 + 50,
                    "token_id": rng.integers(0, 150_000, shard_rows), "token": [" rain"] * shard_rows,
                    "context": [text * 2] * shard_rows,
                    "vector": rng.standard_normal((shard_rows, d), dtype=np.float32)}
            acts = activation_table(cols, base_model="Qwen/Qwen2.5-7B-Instruct", layer=20, shard=f"s{s}", run_id="r")
            lake.commit_shard(ACTIVATIONS, acts, shard=f"s{s}", run_id="r")
            expl = explanation_table(acts.column("act_id").to_pylist(), explanation=[text] * shard_rows,
                                     raw_output=[text] * shard_rows, status=["ok"] * shard_rows,
                                     n_tokens=[120] * shard_rows, av="av", ar="ar", samples=[0] * shard_rows,
                                     shard=f"s{s}", run_id="r", mse=rng.random(shard_rows), cos=rng.random(shard_rows))
            lake.commit_shard(EXPLANATIONS, expl, shard=f"s{s}", run_id="r")
        seconds = time.perf_counter() - t0
    n = shard_rows * shards
    return {"d": d, "labels": n, "seconds": seconds, "labels_per_s": n / seconds,
            "vector_mb_per_s": n * d * 4 / seconds / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--usd-per-gpu-hour", type=float, default=3.0,
                    help="assumed price of one H100 GPU-hour (default 3.00: an on-demand rate of GPU clouds)")
    ap.add_argument("--node-gpus", type=int, default=8)
    ap.add_argument("--config", default="qwen7b.yaml", help="job config whose GPU layout is planned")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale_plan.json")
    args = ap.parse_args()

    layout = config_layout(args.config)
    paths = {name: {"rates": rates, **plan(rates, args.node_gpus, args.usd_per_gpu_hour, layout)}
             for name, rates in gpu_rates().items()}
    result = {"usd_per_gpu_hour": args.usd_per_gpu_hour, "node_gpus": args.node_gpus, "config": args.config,
              "labels_per_hour_target": PER_HOUR, "gpu": paths, "cpu_toy": cpu_rates(), "driver_commit": commit_rate()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"scale plan for jobs/configs/{args.config}, {args.node_gpus}-GPU nodes, ${args.usd_per_gpu_hour:.2f}/GPU-h")
    for name, p in paths.items():
        print(f"\n[{name} path] {next(iter(p['rates'].values()))['source']}")
        print(f"{'stage':8s} {'labels/s/GPU':>13s} {'GPU share':>10s} {'GPUs/node':>10s} {'config GPUs':>12s}")
        for s in p["per_gpu"]:
            print(f"{s:8s} {p['per_gpu'][s]:>13,.0f} {p['gpu_share'][s]:>10.0%} "
                  f"{p['gpus_per_node_balanced'][s]:>10.2f} {p['config_layout_gpus'][s]:>12.0f}")
        print(f"node, balanced: {p['labels_per_s_per_node_balanced']:,.0f} labels/s -> "
              f"{p['nodes_for_1m_per_hour_balanced']} node(s) for 1M/h; {p['gpu_hours_per_1m_labels']:.1f} GPU-h = "
              f"${p['usd_per_1m_labels']:.2f} per 1M labels")
        print(f"node, config layout: {p['labels_per_s_per_node_config_layout']:,.0f} labels/s (bound by "
              f"{p['config_layout_bottleneck']}) -> {p['nodes_for_1m_per_hour_config_layout']} node(s) for 1M/h; "
              f"${p['usd_per_1m_labels_config_layout']:.2f} per 1M labels")
    c, dc = result["cpu_toy"], result["driver_commit"]
    print(f"\ncpu, toy kit ({c['machine']}): " + ", ".join(f"{s} {v:,.0f}/s" for s, v in c["stage_per_s"].items())
          + f"; end to end {c['end_to_end_per_s']:,.0f}/s")
    print(f"driver commits at d={dc['d']}: {dc['labels_per_s']:,.0f} labels/s ({dc['vector_mb_per_s']:.0f} MiB/s of "
          f"vectors) to a local lake")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
