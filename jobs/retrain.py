"""The hard-example loop: `nla retrain` (= python -m jobs.retrain) on a lake that `nla label` filled, or that it
fills first from a corpus (`--input`).

    python -m jobs.retrain --lake ./lake                         # toy kit pair, best-of-k targets
    python -m jobs.retrain --lake ./lake --input toy-corpus      # label the corpus first, then the loop
    python -m jobs.retrain --lake ./lake --method teacher --teacher-url http://127.0.0.1:8000/v1

0. with --input: label the corpus into the lake (jobs.label, the --label-config with --av/--ar);
1. split documents: `--heldout` of them (by a hash of doc_id) are never trained on;
2. mine the hard examples (mse above the `--quantile` of the AV's labels): training docs -> <run>_hard_train,
   held-out docs -> <run>_hard_heldout; and a random held-out set -> <run>_random_heldout;
3. targets for <run>_hard_train (jobs.teach: best-of-k ranked by the AR, or a teacher endpoint);
4. SFT the AV on them (jobs.train, Ray Train) -> a new AV, registered in the checkpoints table;
5. relabel the lake with the old and the new AV (`nla label --from-activations`, the label config's sampling), as
   rows under their own recipes (one already labeled is skipped); the held-out sets' mse before/after with 95%
   intervals of the paired difference is a query over them (`nla compare BEFORE AFTER` shows the whole lake's),
   printed and stored in the runs table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

import numpy as np

from jobs.entry import run_main
from nla.errors import NLAInputError


def paired(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    diff = after - before
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"n": int(len(diff)), "mse_before": float(before.mean()), "mse_after": float(after.mean()),
            "diff": float(diff.mean()), "diff_ci95": 1.96 * se,
            "mse_before_std": float(before.std()), "mse_after_std": float(after.std())}


def relabel(lake_arg: str | None, label_config: str | None, av: str, ar: str, max_new_tokens: int | None) -> str:
    """Label every activation of the lake with `av` (scored by `ar`) as rows under its own recipe, as
    `nla label --from-activations models.av=AV` does (a recipe already in the lake is skipped); its recipe hash."""
    import jobs.label
    from nla.config import load_config
    from nla.labeling.config import LabelConfig, default_config

    cfg = load_config(LabelConfig, label_config or default_config(), [])
    cfg.models.av, cfg.models.ar = av, ar
    cfg.lake = lake_arg or cfg.lake
    if max_new_tokens is not None:
        cfg.sampling.max_new_tokens = max_new_tokens
    return jobs.label.run(cfg, "from-activations")["recipes"]["explanations"]


PAIRED_SQL = """
WITH s AS (SELECT DISTINCT act_id FROM {set}),
m AS (SELECT act_id, recipe, avg(CASE WHEN status = 'ok' AND mse IS NOT NULL THEN mse ELSE 2.0 END) mse
      FROM explanations WHERE recipe IN ('{before}', '{after}') AND act_id IN (SELECT act_id FROM s) GROUP BY ALL)
SELECT b.mse AS before, a.mse AS after FROM m b JOIN m a USING (act_id)
WHERE b.recipe = '{before}' AND a.recipe = '{after}' ORDER BY act_id
"""  # a failed sample explains nothing: it counts as an orthogonal guess (mse 2)


def run(args: argparse.Namespace) -> dict:
    import jobs.teach
    import jobs.train
    from nla.config import load_config
    from nla.lake.mine import mine
    from nla.lake.query import LakeQuery
    from nla.lake.runs import new_run_id, record_run
    from nla.lake.store import Lake, now
    from nla.pair import resolve_pair
    from nla.train.config import TrainJobConfig

    lake = Lake(args.lake or None)
    pair = resolve_pair(av=args.av, ar=args.ar, what="retraining")  # checked as the labeling job checks them
    if pair.ar is None:
        raise NLAInputError("--ar is empty: retraining ranks targets and scores relabels with the AR. Fix: pass --ar "
                            "(or toy).")
    av, ar, av_id, ar_id = pair.av.path, pair.ar.path, pair.av.id, pair.ar.id
    run_id, started, t0 = new_run_id("retrain"), now(), time.perf_counter()
    if args.input:  # step 0: label the corpus into the lake with this pair (committed shards are skipped)
        import jobs.label
        from nla.labeling.config import LabelConfig, default_config

        jobs.label.run(load_config(LabelConfig, args.label_config or default_config(), [
            f"input={args.input}", f"models.av={av}", f"models.ar={ar}", *([f"lake={args.lake}"] if args.lake else [])]))
    tag = run_id.replace("-", "_")
    heldout = f"(hash(doc_id) % 1000) < {int(args.heldout * 1000)}"
    mine_base = f"status = 'ok' AND av = '{av_id}' AND ar = '{ar_id}'"
    with LakeQuery(lake) as q:
        if "labels" not in q.views():
            raise NLAInputError(f"--lake {lake.root}: no labeled activations. Fix: run `nla label` first.")
        stat = q.run(f"SELECT count(*) n, quantile_cont(mse, {args.quantile}) t FROM labels WHERE {mine_base}")
        n, threshold = stat.column("n")[0].as_py(), stat.column("t")[0].as_py()
    if not n:
        raise NLAInputError(f"--lake {lake.root}: no ok labels by AV {av_id} scored by AR {ar_id}. Fix: label with "
                            "this pair (`nla label`), or pass --av/--ar of the pair that labeled the lake.")
    print(f"[retrain] {n} labels by {av_id}; hard = mse > {threshold:.3f} (quantile {args.quantile})", flush=True)
    hard = f"{mine_base} AND mse > {threshold}"
    sets = {
        "hard_train": mine(lake, where=f"{hard} AND NOT ({heldout})", name=f"{tag}_hard_train"),
        "hard_heldout": mine(lake, where=f"{hard} AND {heldout}", name=f"{tag}_hard_heldout",
                             limit=args.eval_rows),
        "random_heldout": mine(lake, where=f"{mine_base} AND {heldout}", name=f"{tag}_random_heldout",
                               limit=args.eval_rows, order="none"),
    }
    for k, r in sets.items():
        print(f"[retrain] mined {k}: {r.rows} rows -> {r.table}", flush=True)
        if r.rows < 2:
            raise NLAInputError(f"{k}: only {r.rows} rows. Fix: label more documents, or lower --quantile / raise "
                                "--heldout.")
    teach = jobs.teach.parser().parse_args([
        "--data", f"{tag}_hard_train", "--out", f"{tag}_targets", "--method", args.method, "--k", str(args.k),
        "--av", av, "--ar", ar, "--teacher-url", args.teacher_url, "--teacher-model", args.teacher_model,
        *(["--lake", args.lake] if args.lake else [])])
    targets = jobs.teach.run(teach)
    cfg = load_config(TrainJobConfig, None, [
        "algo=sft", "role=av", f"data={tag}_targets", f"init={av}", f"out={args.out or f'checkpoints/{run_id}'}",
        f"sft.steps={args.steps}", f"sft.lr={args.lr}", f"sft.batch_size={args.batch_size}", "sft.warmup_steps=5",
        f"scaling.workers={args.workers}", "eval_fraction=0.1", *([f"lake={args.lake}"] if args.lake else [])])
    trained = jobs.train.run(cfg)
    new_av = str(trained["out"]) + "/av"
    # relabel the lake with the old and the new AV under one sampling recipe: rows, so before/after is a query
    recipes = {w: relabel(args.lake, args.label_config, folder, ar, args.max_new_tokens)
               for w, folder in (("before", av), ("after", new_av))}
    results = {}
    with LakeQuery(lake) as q:
        for k in ("hard_heldout", "random_heldout"):
            t = q.run(PAIRED_SQL.format(set=sets[k].table.replace("/", "_"), **recipes), limit=None)
            results[k] = paired(t.column("before").to_numpy(), t.column("after").to_numpy())
    record_run(lake, run_id, job="retrain", status="ok", started_at=started, finished_at=now(),
               config={**vars(args), "av": av, "ar": ar, "threshold": threshold, "new_av": new_av},
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
    ap = argparse.ArgumentParser(prog="python -m jobs.retrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=None, help="a lake `nla label` filled (default $NLA_LAKE or ./lake)")
    ap.add_argument("--input", default=None, help="label this corpus into the lake first, with --av/--ar and the "
                    "base of --label-config (shards already committed are skipped)")
    ap.add_argument("--label-config", default=None, help="the labeling config --input uses (default: the toy kit's, "
                    "jobs/configs/toy.yaml)")
    ap.add_argument("--av", default="toy", help="the AV that labeled the lake (and is retrained)")
    ap.add_argument("--ar", default="toy", help="the AR that scored it")
    ap.add_argument("--quantile", type=float, default=0.75, help="hard = mse above this quantile of the labels")
    ap.add_argument("--heldout", type=float, default=0.3, help="fraction of documents never trained on")
    ap.add_argument("--eval-rows", type=int, default=400, help="rows per held-out set at most")
    ap.add_argument("--method", choices=["best-of-k", "teacher"], default="best-of-k")
    ap.add_argument("--k", type=int, default=8, help="best-of-k samples")
    ap.add_argument("--teacher-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--teacher-model", default="nla-toy-teacher")
    ap.add_argument("--steps", type=int, default=60, help="SFT steps")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="relabel cap (default: the label config's)")
    ap.add_argument("--out", default=None, help="folder of the new AV (default ./checkpoints/<run_id>)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
