"""The hard-example loop: `nla retrain` (= python -m nla.jobs.retrain) on a lake that `nla label` filled, or that it
fills first from a corpus (`--input`).

    python -m nla.jobs.retrain --lake ./lake                         # toy kit pair, best-of-k targets
    python -m nla.jobs.retrain --lake ./lake --input toy-corpus      # label the corpus first, then the loop
    python -m nla.jobs.retrain --lake ./lake --method teacher --teacher-url http://127.0.0.1:8000/v1

0. with --input: label the corpus into the lake (nla.jobs.label, the --label-config with --av/--ar);
1. split documents: `--heldout` of them (by a hash of doc_id) are never trained on;
2. mine the hard examples (mse above the `--quantile` of the AV's labels): training docs -> <run>_hard_train,
   held-out docs -> <run>_hard_heldout; and a random held-out set -> <run>_random_heldout;
3. targets for <run>_hard_train (nla.jobs.teach: best-of-k ranked by the AR, or a teacher endpoint);
4. SFT the AV on them (nla.jobs.train, Ray Train) -> a new AV, registered in the checkpoints table;
5. relabel the lake with the old and the new AV (`nla label --from-activations`, the label config's sampling), as
   rows under their own recipes (one already labeled is skipped); the held-out sets' mse before/after with 95%
   intervals of the paired difference is a query over them (`nla compare BEFORE AFTER` shows the whole lake's),
   printed and stored in the runs table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace

import numpy as np

from nla.jobs import label as label_job
from nla.jobs import teach as teach_job
from nla.jobs import train as train_job
from nla.jobs.entry import run_main
from nla.errors import NLAInputError
from nla.labeling.config import LabelConfig, default_config
from nla.train.config import RetrainConfig, ScalingSettings, TeachConfig, TrainJobConfig
from nla.schemas import EXPLANATIONS


def paired(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    diff = after - before
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"n": int(len(diff)), "mse_before": float(before.mean()), "mse_after": float(after.mean()),
            "diff": float(diff.mean()), "diff_ci95": 1.96 * se,
            "mse_before_std": float(before.std()), "mse_after_std": float(after.std())}


def label_config(cfg: RetrainConfig, av: str, ar: str) -> LabelConfig:
    """The labeling config of this loop: cfg.label_config (default: the toy kit's) with this pair, into this lake."""
    from nla.config import load_config

    label = load_config(LabelConfig, cfg.label_config or default_config())
    label.models.av, label.models.ar = av, ar
    label.lake = cfg.lake or label.lake
    return label


def relabel(cfg: RetrainConfig, av: str, ar: str) -> str:
    """Label every activation of the lake with `av` (scored by `ar`) as rows under its own recipe, as
    `nla label --from-activations models.av=AV` does (a recipe already in the lake is skipped); its recipe hash."""
    label = label_config(cfg, av, ar)
    if cfg.max_new_tokens is not None:
        label.sampling.max_new_tokens = cfg.max_new_tokens
    return label_job.run(label, "from-activations")["recipes"][EXPLANATIONS.name]


def run(cfg: RetrainConfig) -> dict:
    from nla.lake.hard import heldout, labels_of, mse_quantile, paired_mse
    from nla.lake.mine import mine
    from nla.lake.query import LakeQuery, view_name
    from nla.lake.runs import new_run_id, record_run
    from nla.lake.store import Lake, now
    from nla.pair import resolve_pair

    lake = Lake(cfg.lake or None)
    pair = resolve_pair(av=cfg.av, ar=cfg.ar, what="retraining")  # checked as the labeling job checks them
    if pair.ar is None:
        raise NLAInputError("--ar is empty: retraining ranks targets and scores relabels with the AR. Fix: pass --ar "
                            "(or toy).")
    av, ar, av_id, ar_id = pair.av.path, pair.ar.path, pair.av.id, pair.ar.id
    run_id, started, t0 = new_run_id("retrain"), now(), time.perf_counter()
    if cfg.input:  # step 0: label the corpus into the lake with this pair (committed shards are skipped)
        label = label_config(cfg, av, ar)
        label.input = cfg.input
        label_job.run(label)
    tag = run_id.replace("-", "_")
    held, ours = heldout(cfg.heldout), labels_of(av_id, ar_id)
    with LakeQuery(lake) as q:
        if "labels" not in q.views():
            raise NLAInputError(f"--lake {lake.root}: no labeled activations. Fix: run `nla label` first.")
        n, threshold = mse_quantile(q, ours, cfg.quantile)
    if not n:
        raise NLAInputError(f"--lake {lake.root}: no ok labels by AV {av_id} scored by AR {ar_id}. Fix: label with "
                            "this pair (`nla label`), or pass --av/--ar of the pair that labeled the lake.")
    print(f"[retrain] {n} labels by {av_id}; hard = mse > {threshold:.3f} (quantile {cfg.quantile})", flush=True)
    hard = f"{ours} AND {EXPLANATIONS.col.mse} > {threshold}"
    sets = {
        "hard_train": mine(lake, where=f"{hard} AND NOT ({held})", name=f"{tag}_hard_train"),
        "hard_heldout": mine(lake, where=f"{hard} AND {held}", name=f"{tag}_hard_heldout", limit=cfg.eval_rows),
        "random_heldout": mine(lake, where=f"{ours} AND {held}", name=f"{tag}_random_heldout",
                               limit=cfg.eval_rows, order="none"),
    }
    for k, r in sets.items():
        print(f"[retrain] mined {k}: {r.rows} rows -> {r.table}", flush=True)
        if r.rows < 2:
            raise NLAInputError(f"{k}: only {r.rows} rows. Fix: label more documents, or lower --quantile / raise "
                                "--heldout.")
    targets = teach_job.run(TeachConfig(data=f"{tag}_hard_train", out=f"{tag}_targets", method=cfg.method, k=cfg.k,
                                        av=av, ar=ar, teacher_url=cfg.teacher_url,
                                        teacher_model=cfg.teacher_model, lake=cfg.lake))
    train = TrainJobConfig(algo="sft", role="av", data=f"{tag}_targets", init=av,
                           out=cfg.out or f"checkpoints/{run_id}", eval_fraction=0.1, lake=cfg.lake,
                           scaling=ScalingSettings(workers=cfg.workers))
    train.sft = replace(train.sft, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, warmup_steps=5)
    trained = train_job.run(train)
    new_av = str(trained["out"]) + "/av"
    # relabel the lake with the old and the new AV under one sampling recipe: rows, so before/after is a query
    recipes = {w: relabel(cfg, folder, ar) for w, folder in (("before", av), ("after", new_av))}
    results = {}
    with LakeQuery(lake) as q:
        for k in ("hard_heldout", "random_heldout"):
            results[k] = paired(*paired_mse(q, view_name(sets[k].table), recipes["before"], recipes["after"]))
    record_run(lake, run_id, job="retrain", status="ok", started_at=started, finished_at=now(),
               config={**asdict(cfg), "av": av, "ar": ar, "threshold": threshold, "new_av": new_av},
               recipes={"explanations_before": recipes["before"], "explanations_after": recipes["after"]},
               counts={k: r.rows for k, r in sets.items()} | {"targets": targets["rows"]},
               throughput={"seconds": time.perf_counter() - t0, **{f"{k}_{m}": v for k, r in results.items()
                                                                     for m, v in r.items()}})
    print(f"\nrun {run_id}: new AV {new_av} ({time.perf_counter() - t0:.0f}s)")
    print(f"  {'set':<16} {'n':>5} {'mse before':>11} {'mse after':>10} {'diff':>8} {'95% CI':>8}")
    for k, r in results.items():
        print(f"  {k:<16} {r['n']:>5} {r['mse_before']:>11.4f} {r['mse_after']:>10.4f} {r['diff']:>+8.4f} "
              f"{r['diff_ci95']:>8.4f}")
    print(f"  the whole lake: nla compare {recipes['before']} {recipes['after']}")
    return {"run_id": run_id, "new_av": new_av, "threshold": threshold, **results,
            "sets": {k: asdict(r) for k, r in sets.items()}}


def parser() -> argparse.ArgumentParser:
    """The options of `nla retrain`: one per RetrainConfig field, the defaults the dataclass's."""
    c = RetrainConfig
    ap = argparse.ArgumentParser(prog="python -m nla.jobs.retrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=c.lake, help="a lake `nla label` filled (default $NLA_LAKE or ./lake)")
    ap.add_argument("--input", default=c.input, help="label this corpus into the lake first, with --av/--ar and the "
                    "base of --label-config (shards already committed are skipped)")
    ap.add_argument("--label-config", default=c.label_config, help="the labeling config --input uses (default: the "
                    "toy kit's, jobs/configs/toy.yaml)")
    ap.add_argument("--av", default=c.av, help="the AV that labeled the lake (and is retrained)")
    ap.add_argument("--ar", default=c.ar, help="the AR that scored it")
    ap.add_argument("--quantile", type=float, default=c.quantile, help="hard = mse above this quantile of the labels")
    ap.add_argument("--heldout", type=float, default=c.heldout, help="fraction of documents never trained on")
    ap.add_argument("--eval-rows", type=int, default=c.eval_rows, help="rows per held-out set at most")
    ap.add_argument("--method", choices=["best-of-k", "teacher"], default=c.method)
    ap.add_argument("--k", type=int, default=c.k, help="best-of-k samples")
    ap.add_argument("--teacher-url", default=c.teacher_url)
    ap.add_argument("--teacher-model", default=c.teacher_model)
    ap.add_argument("--steps", type=int, default=c.steps, help="SFT steps")
    ap.add_argument("--lr", type=float, default=c.lr)
    ap.add_argument("--batch-size", type=int, default=c.batch_size)
    ap.add_argument("--workers", type=int, default=c.workers)
    ap.add_argument("--max-new-tokens", type=int, default=c.max_new_tokens,
                    help="relabel cap (default: the label config's)")
    ap.add_argument("--out", default=c.out, help="folder of the new AV (default ./checkpoints/<run_id>)")
    return ap


def main(argv: list[str] | None = None) -> int:
    cfg = RetrainConfig(**vars(parser().parse_args(argv)))
    return run_main(lambda: run(cfg))


if __name__ == "__main__":
    sys.exit(main())
