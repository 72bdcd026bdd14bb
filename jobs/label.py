"""The labeling job: corpus shards -> [read] -> [extract: base model, block K] -> [AV: explain] -> [AR: score] -> lake.

    python -m nla.jobs.label --config jobs/configs/toy.yaml                      # all in one (= nla label)
    python -m nla.jobs.label --config jobs/configs/toy.yaml --mode extract    # corpus -> activations (= nla extract)
    python -m nla.jobs.label --config jobs/configs/toy.yaml --mode from-activations   # activations -> explanations
    python -m nla.jobs.label --config jobs/configs/toy.yaml input=./corpus lake=./lake sampling.samples=4
    ray job submit --working-dir . -- python -m nla.jobs.label --config jobs/configs/qwen7b.yaml   # on a cluster

Ray Data streams in input order through one actor pool per model stage (resources from the config), so memory
stays bounded and each shard is committed atomically as soon as it is complete. Reruns skip committed shards.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nla.jobs.entry import JobInterrupted, NothingDone, run_main
from nla.errors import NLAError
from nla.labeling.committer import RunStats, ShardCommitter
from nla.labeling.config import LabelConfig, StageResources
from nla.labeling.plan import Mode, Plan, make_plan
from nla.labeling.progress import RunRecorder
from nla.lake.ann import update_index_if_present
from nla.lake.rows import storage_dtype
from nla.lake.runs import config_hash, new_run_id
from nla.lake.store import now
from nla.quality.flags import FLAGS
from nla.jobs.raystart import start_ray
from nla.rayaddress import cluster_address
from nla.stages.explain import ExplainStage
from nla.stages.extract import ExtractStage
from nla.stages.fused import FusedStage
from nla.stages.read import ReadActivations, ReadShard
from nla.stages.score import ScoreStage
from nla.sysinfo import peak_rss_mb


def stage(ds, fn, res: StageResources, rows_per_call: int | None, **kwargs):
    """One map_batches: a fixed pool of `res.concurrency` actors of fn, each with its CPUs/GPUs (and threads)."""
    from ray.data import ActorPoolStrategy

    return ds.map_batches(fn, fn_constructor_kwargs={**kwargs, "threads": res.threads}, batch_size=rows_per_call,
                          batch_format="numpy", compute=ActorPoolStrategy(size=res.concurrency), num_cpus=res.num_cpus,
                          num_gpus=res.num_gpus or None, **({"resources": res.resources} if res.resources else {}))


def stage_kwargs(plan: Plan, cfg: LabelConfig) -> dict[str, dict[str, Any]]:
    """Constructor arguments of the model stages (the same whether chained or fused), typed as the stages take them."""
    m = cfg.models
    kw: dict[str, dict[str, Any]] = {
        "extract": dict(base=plan.base, base_id=plan.base_id, device=m.device, dtype=m.dtype, fast=m.fast,
                        config=cfg.extract.config(layer=plan.layer, batch_size=cfg.extractor.batch_size)),
        "explain": dict(av=plan.av, sampling=cfg.sampling, device=m.device, dtype=m.dtype,
                        batch_size=cfg.explainer.batch_size, engine=m.av_engine, vllm=cfg.vllm)}
    if plan.ar:
        kw["score"] = dict(ar=plan.ar, device=m.device, dtype=m.dtype, batch_size=cfg.scorer.batch_size, fast=m.fast)
    return kw


def quiet_ray_data() -> None:
    """Ray Data's console shows errors only: its start-up notes, execution plan and progress blocks stay in the
    session's log folder (`verbose=true` shows them). The [commit] lines say how far the run is."""
    import warnings

    import ray.data  # noqa: F401 - configures its loggers on import

    warnings.filterwarnings("ignore", module=r"ray\.data\.")  # e.g. "the operator only received 1 input(s)"
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":  # the console one (Ray's PlainRayHandler)
            handler.setLevel(logging.ERROR)


def build_dataset(plan: Plan, cfg: LabelConfig):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the committer relies on input order to know a shard is complete
    ctx.enable_progress_bars = cfg.verbose  # one [commit] line a shard says how far the run is (committer.progress)
    items = [{"shard": s.id, "path": s.path, "format": s.format} for s in plan.todo]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    if plan.mode == "from-activations":
        # the actors run in their own folder (on a cluster, on other machines): a local lake goes by its absolute path
        root = str(Path(plan.lake.root).expanduser().resolve()) if plan.lake.is_local else plan.lake.root
        ds = stage(ds, ReadActivations, cfg.read, 1, lake=root, storage_options=plan.lake.storage_options)
    else:
        ds = stage(ds, ReadShard, cfg.read, 1, text_column=cfg.text_column, id_column=cfg.id_column,
                   batch_docs=cfg.read.batch_size, storage_options=plan.input_options)
    kw = stage_kwargs(plan, cfg)
    if plan.mode == "label" and cfg.fuse:
        return stage(ds, FusedStage, cfg.explainer, cfg.extractor.batch_size, extract=kw["extract"],
                     explain=kw["explain"], score=kw.get("score"))
    if plan.mode == "from-activations" and cfg.fuse:  # explain -> score in one actor, as above
        return stage(ds, FusedStage, cfg.explainer, cfg.explainer.batch_size, extract=None, explain=kw["explain"],
                     score=kw.get("score"))
    if plan.mode != "from-activations":
        ds = stage(ds, ExtractStage, cfg.extractor, cfg.extractor.batch_size, **kw["extract"])
    if plan.mode != "extract":
        ds = stage(ds, ExplainStage, cfg.explainer, cfg.explainer.batch_size, **kw["explain"])
        if "score" in kw:
            ds = stage(ds, ScoreStage, cfg.scorer, cfg.scorer.batch_size, **kw["score"])
    return ds


def summary(stats: RunStats, seconds: float) -> dict:
    acts = stats.activations
    per_stage = {f"{k}_activations_per_s": acts / v for k, v in stats.stage_seconds.items() if v > 0}
    scores = {"mean_mse": stats.mean_mse, "mean_cos": stats.mean_cos, "fve_nrm": stats.fve_nrm} if stats.scored else {}
    return {"shards_committed": stats.shards_committed, "shards_failed": len(stats.shards_failed),
            "shards_empty": len(stats.shards_empty), "shards_to_retry": len(stats.shards_retry),
            "documents": stats.documents, "bad_documents": stats.bad_documents,
            "short_documents": stats.short_documents, "activations": acts, "explanations": stats.explanations,
            "explanations_ok": stats.samples_ok, "explanations_error": stats.explanations_error, "seconds": seconds,
            "activations_per_s": acts / seconds if seconds else 0.0, **per_stage, **scores,
            "explanations_flagged": stats.flagged, **{f"flag_{f}": stats.flags.get(f, 0) for f in FLAGS},
            "driver_peak_rss_mb": peak_rss_mb()}


def print_summary(s: dict, plan: Plan, run_id: str, stats: RunStats) -> None:
    print(f"\nrun {run_id} ({plan.mode}) -> lake {plan.lake.root}")
    for table, recipe in plan.recipes.items():
        print(f"  {'recipe ' + table:<32} {recipe.hash}")
    for k, v in s.items():
        if isinstance(v, float) and v != v:  # nan: nothing to average (fve_nrm needs two different activations)
            print(f"  {k:<32} n/a")
        else:
            print(f"  {k:<32} {v:.4g}" if isinstance(v, float) else f"  {k:<32} {v}")
    for shard, msg in stats.shards_failed:
        print(f"  skipped shard {shard}: {msg.removeprefix(f'shard {shard}: ')}")
    for shard, msg in stats.shards_empty:
        print(f"  empty shard {shard}: {msg}")
    for f in stats.failures[:5]:
        print(f"  bad document {f}")


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def describe_plan(plan: Plan) -> None:
    print(f"[plan] {len(plan.shards)} shards, {len(plan.shards) - len(plan.todo) - len(plan.skipped_changed)} already "
          f"committed under this recipe, {len(plan.todo)} to do; layer {plan.layer}, d {plan.d}; writing "
          f"{', '.join(f'{t} (recipe {r.hash})' for t, r in plan.recipes.items() if t in plan.writes)}")
    for s in plan.skipped_changed:
        print(f"[plan] skipped: {s.name} changed since it was committed (on_changed=skip)")
    if plan.legacy:
        print(f"[plan] {plan.legacy} of these shards were committed by an older nla (no fingerprint or recipe): they "
              "are labeled again under this recipe, beside the old rows")
    if not plan.todo:
        print("[plan] nothing to do: every shard is committed under this recipe. Another AV, AR, sampling or "
              "extraction setting is another recipe and labels again; changed files are found by content.")


def run(cfg: LabelConfig, mode: Mode = "label") -> dict:
    import ray

    address = None if ray.is_initialized() else cluster_address(cfg.ray_address)  # refused now if nothing answers
    plan = make_plan(cfg, mode)  # every model/lake mismatch is refused here, before any work
    plan.lake.on_store_wait = lambda message: print(f"[store] {message}", flush=True)
    run_id = new_run_id(mode)
    config = {**asdict(cfg), "mode": mode, "resolved": {"base": plan.base, "av": plan.av, "ar": plan.ar}}
    chash = config_hash(config)
    recipes = {t: r.describe() for t, r in plan.recipes.items() if t in plan.writes}
    describe_plan(plan)
    if plan.todo and not ray.is_initialized():
        if not cfg.verbose:
            quiet_ray_data()
        start_ray(address, cfg.ray_address, log_to_driver=False,
                  logging_level=logging.INFO if cfg.verbose else logging.ERROR)  # a cluster Ray cannot find: refused
    started, t0 = now(), time.perf_counter()
    recorder = RunRecorder(plan.lake, run_id, job=mode, config=config, started_at=started, recipes=recipes,
                           shards_total=len(plan.todo))
    recorder.record("running")
    committer = ShardCommitter.for_plan(plan, run_id=run_id, config_hash=chash,
                                        vector_dtype=storage_dtype(plan.lake, cfg.models.dtype), quality=cfg.quality)
    status, interrupted = "failed", None
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        if plan.todo:
            for batch in build_dataset(plan, cfg).iter_batches(batch_size=None, batch_format="numpy"):
                committer.add(batch)
                st = committer.stats
                recorder.progress(st.shards_done,
                                  lambda: summary(committer.stats, time.perf_counter() - t0))
        committer.finish()
        if plan.todo and mode != "from-activations":
            index = update_index_if_present(plan.lake)  # the search index takes in the shards just committed
            if index is not None:
                print(f"[index] {index.note}; covers activations version {index.table_version}")
        status = "ok"
    except KeyboardInterrupt as e:
        status, interrupted = "interrupted", (143 if str(e) == "SIGTERM" else 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        stats = committer.stats
        s = summary(stats, time.perf_counter() - t0)
        nothing = plan.todo and status == "ok" and not stats.shards_committed
        try:
            recorder.record("empty" if nothing else status, s, finished_at=now())
        except NLAError as e:
            if status == "ok":
                raise
            print(f"[runs] the {status} run could not be recorded either: {e}", file=sys.stderr)  # keep the cause
    if interrupted:
        left = len(plan.todo) - stats.shards_committed
        raise JobInterrupted(f"interrupted: {stats.shards_committed} shards committed, {left} left. Rerun the same "
                             "command to resume (committed shards are skipped).", interrupted)
    print_summary(s, plan, run_id, stats)
    _warn(s, stats, plan, cfg.quality.warn_share)
    return {"run_id": run_id, "recipes": {t: r.hash for t, r in plan.recipes.items()}, **s}


def _warn(s: dict, stats: RunStats, plan: Plan, warn_share: float) -> None:
    """Say in plain words when the run did less than asked, or when the pair does not explain this data."""
    if plan.todo and stats.explanations and stats.explanations_error == stats.explanations:
        raise NothingDone(f"nothing was labeled: every AV batch failed ({stats.explanations_error} explanations with "
                          f"status error; the first: {stats.first_error[:300]}). Nothing was marked done: fix the "
                          "cause and rerun the same command.")
    if plan.todo and not stats.shards_committed:
        raise NothingDone("nothing was labeled: every shard was empty or unreadable (see the lines above). Fix the "
                          "cause and rerun the same command: nothing was marked done.")
    if s.get("fve_nrm", 0.0) < 0:
        print(f"warning: fve_nrm {s['fve_nrm']:.3f} < 0: this pair does not explain this data: its reconstructions "
              "are worse than predicting the mean activation. Use an AV/AR pair trained for this base and text.")
    if stats.explanations and stats.flagged > warn_share * stats.explanations:
        top = ", ".join(f"{f} {n}" for f, n in sorted(stats.flags.items(), key=lambda kv: -kv[1]))
        print(f"warning: {stats.flagged} of {stats.explanations} explanations ({stats.flagged / stats.explanations:.0%}) "
              f"are flagged ({top}): see `nla quality` and docs/quality.md before trusting them.")


def main(argv: list[str] | None = None) -> int:
    from nla.config import load_config

    ap = argparse.ArgumentParser(prog="python -m nla.jobs.label", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="jobs/configs/toy.yaml", help="YAML config (default: the toy kit's)")
    ap.add_argument("--mode", choices=["label", "extract", "from-activations"], default="label")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. input=./corpus sampling.samples=4")
    args = ap.parse_args(argv)
    return run_main(lambda: run(load_config(LabelConfig, args.config, args.overrides), args.mode))

if __name__ == "__main__":
    sys.exit(main())
