"""TrainJobConfig: what `nla train sft|grpo` (python -m jobs.train) reads from YAML and key=value overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nla.train.grpo import GRPOConfig
from nla.train.loop import TrainConfig


@dataclass
class ScalingSettings:
    workers: int = 1  # Ray Train workers (one model replica each; DDP or FSDP across them)
    use_gpu: bool = False  # one GPU per worker (NCCL); CPU workers use gloo
    cpus_per_worker: float = 1.0
    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: FSDP2 shards weights, grads and AdamW state (CPU or GPU)
    max_failures: int = 2  # worker-group restarts from the last checkpoint before the run fails
    checkpoint_every: int = 20  # optimiser steps between Ray Train checkpoints (the resume points)


@dataclass
class TrainJobConfig:
    algo: Literal["sft", "grpo"] = "sft"  # set by the command: nla train sft | nla train grpo
    role: Literal["av", "ar"] = "av"  # sft: which model to train (grpo trains the AV and the AR together)
    data: str = ""  # table: training_sets/<name> (or just <name>), or `activations` (vectors only; grpo)
    eval_data: str = ""  # held-out table; "" = hold out eval_fraction of `data`, split by act_id
    eval_fraction: float = 0.1
    limit: int = 200_000  # rows read from `data` at most (training sets are held in memory)
    init: str = "toy"  # checkpoint to start from (AV or AR folder; "toy" = the toy kit's); --from on the CLI
    ar: str = "toy"  # grpo: the AR that scores (and trains beside) the AV
    out: str = ""  # output folder; "" = ./checkpoints/<run_id>. The final checkpoint lands in out/av, out/ar
    lake: str = ""  # lake root; "" = $NLA_LAKE, else ./lake
    ray_address: str = ""  # "" = $RAY_ADDRESS if set, else a local Ray
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16"] = "float32"  # weights; sft.dtype=bf16 adds autocast
    eval_samples: int = 256  # held-out activations explained greedily for round-trip fve (grpo, and av sft)
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100, batch_size=32, lr=1e-4,
                                                                 warmup_steps=10, log_every=10))
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
