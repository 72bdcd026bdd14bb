"""The labeling job without Ray, in the test's own process: its plan, its stages (extract + explain + score fused in
one, the toy config's layout; or extract alone), its reader and its shard committer, on the batches Ray Data would
form. A lake costs seconds this way instead of a job's processes (a driver and its actors each import torch and
Ray)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

Batch = dict[str, np.ndarray]


def nla(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nla ARGS` through its entry point in this process, not a new `nla` process
    (each imports torch: ~2 CPU-s). Not for `nla label`, which hands its process over to the Ray program."""
    from nla.cli.main import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def label_fused(corpus: Path, lake: Path, *overrides: str) -> tuple[list[Batch], dict]:
    """Label `corpus` into `lake` under the toy config with `overrides`. Returns the fused stage's output batches, in
    the order the job's driver receives them, and the committer's ids (what tests/reliability/commit_driver.py
    replays)."""
    return run(corpus, lake, "label", overrides)


def extract(corpus: Path, lake: Path, *overrides: str, edit: Callable[[Batch], Batch] = lambda b: b) -> None:
    """What `nla extract` commits, each batch passed through `edit` first (e.g. to plant bad vectors)."""
    run(corpus, lake, "extract", overrides, edit)


def run(corpus: Path, lake: Path, mode: str, overrides: tuple[str, ...],
        edit: Callable[[Batch], Batch] = lambda b: b) -> tuple[list[Batch], dict]:
    import torch

    from nla.config import load_config
    from nla.jobs.label import stage_kwargs
    from nla.labeling.committer import ShardCommitter
    from nla.labeling.config import LabelConfig, default_config
    from nla.labeling.plan import make_plan
    from nla.stages.extract import ExtractStage
    from nla.stages.fused import FusedStage
    from nla.stages.read import ReadShard

    cfg = load_config(LabelConfig, default_config(), [f"input={corpus}", f"lake={lake}", *overrides])
    plan = make_plan(cfg, mode)
    kw = stage_kwargs(plan, cfg)
    threads = torch.get_num_threads()
    stage = ExtractStage(**kw["extract"]) if mode == "extract" else \
        FusedStage(extract=kw["extract"], explain=kw["explain"], score=kw["score"], threads=cfg.explainer.threads)
    read = ReadShard(text_column=cfg.text_column, id_column=cfg.id_column, batch_docs=cfg.read.batch_size)
    committer = ShardCommitter.for_plan(plan, run_id="reference", config_hash="reference", log=lambda *_: None)
    ids = {k: getattr(committer, k) for k in ("base_id", "layer", "d", "av_id", "ar_id", "recipes", "sources")}
    items = {k: np.array([getattr(s, a) for s in plan.todo], object)
             for k, a in (("shard", "id"), ("path", "path"), ("format", "format"))}
    batches = []
    try:
        for docs in read(items):
            batches.append(edit(stage(docs)))
            committer.add(batches[-1])
        committer.finish()
    finally:
        torch.set_num_threads(threads)  # the fused stage sets its own
    return batches, ids
