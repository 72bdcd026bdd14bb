"""Retraining on Ray Train: `nla train sft|grpo` (= python -m nla.jobs.train --algo sft|grpo ...).

    python -m nla.jobs.train --algo sft role=av data=hard_v1 init=toy out=./ckpt/av-v2
    python -m nla.jobs.train --algo sft role=ar data=hard_v1 scaling.workers=2
    python -m nla.jobs.train --algo grpo data=activations init=toy ar=toy grpo.steps=50 scaling.workers=2

A TorchTrainer runs nla.train.run on `scaling.workers` workers (gloo on CPU, NCCL on GPUs), each worker on its share
of the examples, in one of two strategies:
- ddp (default): torch DDP through ray.train.torch.prepare_model; every worker holds the whole model.
- fsdp: FSDP2 (`fully_shard`, nla.train.sharding) on each decoder block, then the root: parameters, gradients and
  AdamW state are sharded over the workers (GRPO's frozen reference too). Checkpoints and the final weights are
  gathered whole to rank 0 on CPU; evaluation and GRPO's sampling run on every rank (synced generate). On CPU (gloo)
  it is tested against ddp: same eval loss to 1e-4 (tests/jobs/test_train.py); on one GPU (NCCL, a process group
  of one rank) it equals the unsharded run to every digit (bench/results/gpu_sft.json). Several GPUs: not run yet.
One worker trains the plain model, whatever the strategy. Every `scaling.checkpoint_every` steps rank 0 reports a
Ray Train checkpoint (weights, optimiser, step); a worker that dies restarts the group from the last one
(`scaling.max_failures` times). The final checkpoint is written in the release layout under `out/` and registered in
the lake's checkpoints table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from nla.jobs.entry import run_main
from nla.errors import NLAConfigError
from nla.jobs.raystart import start_ray
from nla.rayaddress import cluster_address
from nla.train.config import TrainJobConfig


def worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from nla.train.run import WorkerEnv, run_grpo, run_sft
    from nla.train.sharding import shard

    cfg: TrainJobConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = str(ray.train.torch.get_device()) if cfg.scaling.use_gpu else "cpu"
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))

    def wrap(model):
        if world == 1:
            return model
        if cfg.scaling.strategy == "fsdp":
            return shard(model, device)
        return ray.train.torch.prepare_model(model, move_to_device=False, parallel_strategy="ddp")

    def report(metrics: dict, state: dict | None) -> None:
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / "state.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            print(f"[ckpt] step {metrics.get('step')} saved", flush=True)

    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            resume = torch.load(Path(d) / "state.pt", map_location=device, weights_only=False)
    env = WorkerEnv(rank=rank, world=world, device=device, wrap=wrap, report=report, resume=resume,
                    log=lambda m: print(m, flush=True), storage_options=config["storage_options"])
    (run_sft if cfg.algo == "sft" else run_grpo)(cfg, env, Path(config["out"]))


def resolve(cfg: TrainJobConfig) -> TrainJobConfig:
    """Toy paths, defaults and the checks that must fail before Ray starts (every input named with its fix)."""
    from nla.checks import check_checkpoint
    from nla.meta import NLAMeta
    from nla.pair import resolve_folder

    # the checks that cost nothing first: a folder may be "toy", whose first use builds the kit (minutes)
    if not cfg.data:
        raise NLAConfigError("--data is missing. Fix: name a table, e.g. --data hard_v1 (a training set from "
                             "`nla mine`) or --data activations (GRPO).")
    loop = cfg.sft if cfg.algo == "sft" else cfg.grpo
    for key, value, example in ((f"{cfg.algo}.steps", loop.steps, "--steps 100"),
                                (f"{cfg.algo}.batch_size", loop.batch_size, f"{cfg.algo}.batch_size=16"),
                                ("scaling.workers", cfg.scaling.workers, "--workers 2")):
        if value < 1:
            raise NLAConfigError(f"{key}={value}: must be >= 1. Fix: e.g. {example}.")
    if cfg.scaling.strategy not in ("ddp", "fsdp"):  # the YAML loader checks too; a config built in code may not
        raise NLAConfigError(f"scaling.strategy={cfg.scaling.strategy!r}: unknown. Fix: use ddp or fsdp.")
    if cfg.algo != "sft":
        cfg.role = "av"
        cfg.ar = resolve_folder(cfg.ar, "ar")
    cfg.init = resolve_folder(cfg.init, cfg.role)
    for key, folder, role in (("--from", cfg.init, cfg.role), *((("--ar", cfg.ar, "ar"),) if cfg.algo == "grpo"
                                                                 else ())):
        meta = NLAMeta.load(folder)  # a clear error for a folder without a sidecar
        if meta.role != role:
            raise NLAConfigError(f"{key} {folder}: is an {meta.role!r} checkpoint, this run trains the {role!r}. "
                                 f"Fix: pass the {role.upper()} folder of the pair.")
        check_checkpoint(folder, role)  # sidecar against the tokenizer, weights readable: before Ray starts
    return cfg


def register(cfg: TrainJobConfig, out: Path, run_id: str, summary: dict) -> list[str]:
    """Add the new checkpoint folders to the lake's checkpoints table; returns their ids."""
    import pyarrow as pa

    from nla.lake.schema import arrow_schema
    from nla.lake.store import Lake, now
    from nla.pair import checkpoint_id
    from nla.schemas import CHECKPOINTS

    C = CHECKPOINTS.col
    lake, ids = Lake(cfg.lake or None), []
    roles = ["av", "ar"] if cfg.algo == "grpo" else [cfg.role]
    for role in roles:
        folder = out / role
        parent = cfg.ar if (cfg.algo == "grpo" and role == "ar") else cfg.init
        metric = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        row = {C.checkpoint_id: [checkpoint_id(str(folder))], C.role: [role], C.parent: [checkpoint_id(parent)],
               C.stage: ["rl" if cfg.algo == "grpo" else "sl"], C.metrics: [json.dumps(metric, default=float)],
               C.path: [str(folder.resolve())], C.run_id: [run_id], C.created_at: [now()]}
        lake.merge(CHECKPOINTS, pa.table(row, schema=arrow_schema(CHECKPOINTS)), run_id=run_id)
        ids.append(row[C.checkpoint_id][0])
    return ids


def run(cfg: TrainJobConfig) -> dict:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from nla.lake.runs import new_run_id, record_run
    from nla.lake.store import Lake, now
    from nla.meta import NLAMeta
    from nla.train.data import load_examples

    cfg = resolve(cfg)
    run_id = new_run_id(f"train-{cfg.algo}")
    out = Path(cfg.out or f"checkpoints/{run_id}").expanduser().resolve()
    lake = Lake(cfg.lake or None)
    if lake.is_local:  # the Ray Train workers run in their own folder: hand them the lake by its absolute path
        cfg.lake = str(Path(lake.root).expanduser().resolve())
    d = NLAMeta.load(cfg.init).d_model
    n = len(load_examples(lake, cfg.data, d=d, need_explanations=cfg.algo == "sft", limit=cfg.limit))
    print(f"[train] {cfg.algo} {cfg.role if cfg.algo == 'sft' else 'av+ar'} from {cfg.init} on {cfg.data} "
          f"({n} examples), {cfg.scaling.workers} worker(s) {cfg.scaling.strategy}, -> {out}", flush=True)
    config = {**asdict(cfg), "out": str(out)}
    started, t0 = now(), time.perf_counter()
    if not ray.is_initialized():  # a cluster that is not there is refused before the run is recorded
        start_ray(cluster_address(cfg.ray_address), cfg.ray_address)
    record_run(lake, run_id, job=f"train-{cfg.algo}", config=config, status="running", started_at=started)
    sc = cfg.scaling
    trainer = TorchTrainer(
        # the lake's storage options travel beside the config, never in it: the config is recorded in the runs table
        worker_loop, train_loop_config={"cfg": cfg, "out": str(out), "storage_options": lake.storage_options},
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=sc.workers, use_gpu=sc.use_gpu,
                                     resources_per_worker={"CPU": sc.cpus_per_worker, **({"GPU": 1} if sc.use_gpu
                                                                                        else {})}),
        run_config=RunConfig(name=run_id, storage_path=str(out / "ray_train"),
                             failure_config=FailureConfig(max_failures=sc.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    status = "failed"
    summary: dict = {}
    try:
        trainer.fit()
        summary = json.loads((out / "metrics.json").read_text())
        status = "ok"
    finally:
        record_run(lake, run_id, job=f"train-{cfg.algo}", config=config, status=status, started_at=started,
                   finished_at=now(), counts={"examples": n, "workers": sc.workers},
                   throughput={"seconds": time.perf_counter() - t0})
    ids = register(cfg, out, run_id, summary)
    print(f"\nrun {run_id}: {cfg.algo} done in {time.perf_counter() - t0:.0f}s -> {out}")
    for k, v in summary.items():
        if isinstance(v, (int, float, str)):
            print(f"  {k:<24} {v:.4g}" if isinstance(v, float) else f"  {k:<24} {v}")
    print(f"  registered {', '.join(ids)} in {lake.root}/checkpoints")
    return {"run_id": run_id, "out": str(out), "checkpoints": ids, **summary}


def main(argv: list[str] | None = None) -> int:
    from nla.config import load_config

    ap = argparse.ArgumentParser(prog="python -m nla.jobs.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algo", choices=["sft", "grpo"], default="sft")
    ap.add_argument("--config", default=None, help="YAML config (default: built-in defaults, toy kit)")
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. data=hard_v1 role=ar sft.steps=200")
    args = ap.parse_args(argv)
    return run_main(lambda: run(load_config(TrainJobConfig, args.config, [f"algo={args.algo}", *args.overrides])))


if __name__ == "__main__":
    sys.exit(main())
