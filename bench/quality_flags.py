"""The quality flags on the toy kit: how often they fire on clean labels, and whether they catch planted failures.

    .venv/bin/python bench/quality_flags.py                 # ~5 min on 2 cores
    .venv/bin/python bench/quality_flags.py --docs 300

1. label a fresh toy corpus with the toy pair (the labeling job): each flag's share on these clean labels;
2. the template statistic on them: the spread of every text explaining >= 8 activations, against the spread of
   random groups of 8 of the same activations (what the threshold separates);
3. relabel the same activations (`--from-activations`) with a broken AV (its injection scale cut to 1e-3, so the
   vector barely reaches it): the share flagged template, and the mse of flagged and clean rows.
Prints the figures, writes bench/results/quality_flags.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=500)
    args = ap.parse_args()
    from nla.jobs.label import run
    from nla.config import load_config
    from nla.labeling.config import LabelConfig
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake
    from nla.quality.flags import FLAGS
    from nla.quality.lakepass import template_spreads
    from nla.quality.settings import QualitySettings
    from nla.toy.kit import ensure_toy_kit
    from nla.toy.shards import write_corpus

    kit, s = ensure_toy_kit(), QualitySettings()
    tmp = Path(tempfile.mkdtemp(prefix="nla-quality-"))
    write_corpus(tmp / "corpus", docs=args.docs, shards=5, seed=2027)
    lake = tmp / "lake"
    t0 = time.time()
    clean = run(load_config(LabelConfig, str(ROOT / "jobs/configs/toy.yaml"), [f"input={tmp / 'corpus'}",
                                                                                f"lake={lake}"]))
    broken_av = tmp / "broken-av"
    shutil.copytree(kit / "av", broken_av)
    meta = yaml.safe_load((broken_av / "nla_meta.yaml").read_text(encoding="utf-8"))
    meta["extraction"]["injection_scale"] = 1e-3
    (broken_av / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    broken = run(load_config(LabelConfig, str(ROOT / "jobs/configs/toy.yaml"), [f"lake={lake}",
                                                                                 f"models.av={broken_av}"]),
                 "from-activations")
    with LakeQuery(Lake(lake)) as q:
        spreads = template_spreads(q, clean["recipes"]["explanations"], s)
        u = np.array([r["vector"] for r in q.run("SELECT vector FROM activations", limit=None).to_pylist()])
        per = {r["recipe"]: r for r in q.run("SELECT * FROM quality", limit=None).to_pylist()}
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    mu = u.mean(0)
    population = 1 - mu @ mu
    rng = np.random.default_rng(0)
    n = s.template_min_vectors
    random_spreads = []
    for _ in range(2000):
        m = u[rng.choice(len(u), n, replace=False)].mean(0)
        random_spreads.append((1 - m @ m) / ((1 - 1 / n) * population))
    c, b = per[clean["recipes"]["explanations"]], per[broken["recipes"]["explanations"]]
    result = {
        "command": "python bench/quality_flags.py" + (f" --docs {args.docs}" if args.docs != 500 else ""),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seconds": round(time.time() - t0, 1),
        "settings": {"template_min_vectors": n, "template_spread": s.template_spread,
                     "low_norm_percentile": s.low_norm_percentile, "loop_distinct": s.loop_distinct},
        "clean": {"explanations": c["explanations"], "fve_nrm": round(clean["fve_nrm"], 4),
                  "flag_share": {f: round(c[f] / c["explanations"], 4) for f in FLAGS},
                  "flagged_share": round(c["flagged"] / c["explanations"], 4),
                  "mse_clean": round(c["mse_clean"], 4),
                  "mse_flagged": round(c["mse_flagged"], 4) if c["mse_flagged"] is not None else None},
        "template_spread": {"texts_judged": len(spreads.spread),
                            "clean_texts_max": round(max(spreads.spread.values(), default=0.0), 4),
                            "clean_texts_p90": round(float(np.percentile(list(spreads.spread.values()) or [0], 90)), 4),
                            "random_groups_p1": round(float(np.percentile(random_spreads, 1)), 4),
                            "random_groups_p5": round(float(np.percentile(random_spreads, 5)), 4),
                            "random_groups_median": round(float(np.median(random_spreads)), 4)},
        "broken_av": {"explanations": b["explanations"], "template_share": round(b["template"] / b["explanations"], 4),
                      "fve_nrm": round(broken["fve_nrm"], 4), "mse_clean": round(b["mse_clean"], 4)
                      if b["mse_clean"] is not None else None, "mse_flagged": round(b["mse_flagged"], 4)},
    }
    print(json.dumps(result, indent=2))
    (ROOT / "bench/results/quality_flags.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
