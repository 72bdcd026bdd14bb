"""Retraining on the toy kit (CPU): does GRPO beat the SFT AV, and does the hard-example loop help where it should?

    .venv/bin/python bench/retrain_toy.py                    # ~10 min on 2 cores
    .venv/bin/python bench/retrain_toy.py --grpo-steps 40 --docs 400

1. label a toy corpus into a fresh lake (the labeling job);
2. GRPO from the toy SFT pair (AV + AR trained together, Ray Train), then explain fresh held-out activations
   greedily with the SFT pair and with the GRPO pair: round-trip fve_nrm of each, and the paired mse difference with
   its 95% interval;
3. `nla.jobs.retrain`: mine the hard examples, best-of-k targets, SFT the AV, relabel the held-out hard set and a random
   held-out set: mse before/after with 95% intervals.
Prints a table, writes bench/results/retrain_toy.json.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def sh(*args: str) -> str:
    p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=ENV)
    if p.returncode != 0:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    return p.stdout


def heldout_vectors(n_docs: int, seed: int):
    import torch

    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.toy.kit import ToyRecipe, ensure_toy_kit
    from nla.toy.corpus import generate_corpus

    r = ToyRecipe()
    docs = generate_corpus(n_docs, seed)
    ext = Extractor.from_pretrained(ensure_toy_kit() / "base", ExtractConfig(
        layer=r.layer, positions_per_doc=r.positions_per_doc, min_position=r.min_position, seed=seed))
    return torch.from_numpy(ext([d.text for d in docs], [d.doc_id for d in docs])["vector"])


def relabel_mse(av: str, ar: str, vectors, max_new_tokens: int) -> np.ndarray:
    """Per-vector mse of a greedy AV explanation scored by the AR; a failed sample counts 2.0 (an orthogonal guess)."""
    from nla.client import NLAClient, NLACritic

    client, critic = NLAClient(av, batch_size=128), NLACritic(ar, batch_size=128)
    gens = client.explain(vectors, temperature=0, max_new_tokens=max_new_tokens)
    mse, _ = critic.score_batch([g.explanation or g.raw_output or "(empty)" for g in gens], vectors)
    out = mse.numpy().astype(np.float64)
    out[np.array([g.status != "ok" for g in gens])] = 2.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=600, help="toy documents labeled (x6 activations)")
    ap.add_argument("--heldout-docs", type=int, default=100, help="fresh documents for the GRPO comparison")
    ap.add_argument("--grpo-steps", type=int, default=60)
    ap.add_argument("--grpo-lr", type=float, default=2e-5)
    ap.add_argument("--retrain-steps", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrain_toy.json"))
    args = ap.parse_args()

    from nla.jobs.retrain import paired
    from nla.metrics import fve_nrm
    from nla.toy.kit import ensure_toy_kit
    from nla.toy.shards import write_corpus

    kit = ensure_toy_kit()
    res: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_corpus(tmp / "corpus", docs=args.docs, shards=4, seed=101)
        t0 = time.perf_counter()
        sh("-m", "nla.jobs.label", "--config", "jobs/configs/toy.yaml", f"input={tmp / 'corpus'}",
           f"lake={tmp / 'lake'}")
        res["label_seconds"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sh("-m", "nla.jobs.train", "--algo", "grpo", "data=activations", f"out={tmp / 'grpo'}", f"lake={tmp / 'lake'}",
           f"grpo.steps={args.grpo_steps}", f"grpo.av_lr={args.grpo_lr}", "grpo.batch_size=8", "grpo.group=8",
           "grpo.max_new_tokens=64", "grpo.log_every=10", "eval_samples=128", "scaling.checkpoint_every=0")
        res["grpo_seconds"] = time.perf_counter() - t0
        curve = [json.loads(x) for x in (tmp / "grpo" / "metrics.jsonl").read_text().splitlines()]
        res["grpo_curve"] = [{k: r[k] for k in ("step", "reward_mean", "reward_std", "fve_nrm", "kl",
                                                 "response_tokens", "failed_fraction")} for r in curve]
        v = heldout_vectors(args.heldout_docs, seed=4242)
        sft = relabel_mse(str(kit / "av"), str(kit / "ar"), v, 64)
        rl = relabel_mse(str(tmp / "grpo" / "av"), str(tmp / "grpo" / "ar"), v, 64)
        scale = float(np.sqrt(v.shape[1]))
        import torch

        res["grpo"] = {"heldout_activations": len(v), "fve_sft": fve_nrm(torch.from_numpy(sft), v, scale),
                       "fve_grpo": fve_nrm(torch.from_numpy(rl), v, scale), **paired(sft, rl)}

        t0 = time.perf_counter()
        out = sh("-m", "nla.jobs.retrain", "--lake", str(tmp / "lake"), "--steps", str(args.retrain_steps),
                 "--out", str(tmp / "retrained"))
        res["retrain_seconds"] = time.perf_counter() - t0
        from nla.lake.query import LakeQuery
        from nla.lake.store import Lake

        with LakeQuery(Lake(tmp / "lake")) as q:
            row = q.run("SELECT throughput, counts FROM runs WHERE job = 'retrain'").to_pylist()[0]
        res["retrain"] = {**json.loads(row["throughput"]), "counts": json.loads(row["counts"])}
        res["retrain_log_tail"] = out.splitlines()[-4:]
    g, r = res["grpo"], res["retrain"]
    print(f"\nretraining on the toy kit, {res['machine']}")
    print(f"{'what':<34} {'n':>5} {'before':>8} {'after':>8} {'diff':>8} {'95% CI':>7}")
    print(f"{'GRPO vs SFT: round-trip mse':<34} {g['n']:>5} {g['mse_before']:>8.4f} {g['mse_after']:>8.4f} "
          f"{g['diff']:>+8.4f} {g['diff_ci95']:>7.4f}")
    print(f"{'GRPO vs SFT: round-trip fve_nrm':<34} {g['n']:>5} {g['fve_sft']:>8.4f} {g['fve_grpo']:>8.4f}")
    for k in ("hard_heldout", "random_heldout"):
        print(f"{'retrain: ' + k + ' mse':<34} {r[f'{k}_n']:>5} {r[f'{k}_mse_before']:>8.4f} "
              f"{r[f'{k}_mse_after']:>8.4f} {r[f'{k}_diff']:>+8.4f} {r[f'{k}_diff_ci95']:>7.4f}")
    print(f"seconds: label {res['label_seconds']:.0f}, grpo {res['grpo_seconds']:.0f} ({args.grpo_steps} steps), "
          f"retrain {res['retrain_seconds']:.0f}")
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
