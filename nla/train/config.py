"""The training jobs' configs: TrainJobConfig (`nla train sft|grpo`, python -m nla.jobs.train: YAML and key=value
overrides), TeachConfig (`nla teach`) and RetrainConfig (`nla retrain`), whose fields are those programs' options.
Not here: running them (jobs/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nla.settings import TrainDType
from nla.train.grpo import GRPOConfig
from nla.train.loop import TrainConfig
from nla.train.targets import TeacherSettings


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
    dtype: TrainDType = "float32"  # weights; sft.dtype=bfloat16 adds autocast
    eval_samples: int = 256  # held-out activations explained greedily for round-trip fve (grpo, and av sft)
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100, batch_size=32, lr=1e-4,
                                                                 warmup_steps=10, log_every=10))
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)


@dataclass
class TeachConfig:
    data: str  # training set to relabel (training_sets/<name>)
    out: str  # name of the new training set
    method: Literal["teacher", "best-of-k"] = "teacher"  # targets from a teacher LLM, or the AV's best of k by the AR
    teacher_url: str = TeacherSettings.url  # OpenAI-compatible API base
    teacher_model: str = TeacherSettings.model  # the model name the endpoint serves
    av: str = "toy"  # best-of-k: the AV that samples
    ar: str = "toy"  # best-of-k: the AR that ranks
    k: int = 8  # best-of-k: samples per activation
    lake: str = ""  # lake root; "" = $NLA_LAKE, else ./lake
    batch_size: int = 64  # rows per TeachStage call
    concurrency: int = 1  # TeachStage actors
    num_cpus: float = 1.0  # CPUs per TeachStage actor
    in_flight: int = 8  # teacher requests in flight per actor


@dataclass
class RetrainConfig:
    lake: str = ""  # a lake `nla label` filled; "" = $NLA_LAKE, else ./lake
    input: str = ""  # label this corpus into the lake first, with av/ar and the base of label_config ("" = don't)
    label_config: str = ""  # the labeling config of input and the relabels; "" = the toy kit's (jobs/configs/toy.yaml)
    av: str = "toy"  # the AV that labeled the lake (and is retrained)
    ar: str = "toy"  # the AR that scored it
    quantile: float = 0.75  # hard = mse above this quantile of the labels
    heldout: float = 0.3  # fraction of documents never trained on
    eval_rows: int = 400  # rows per held-out set at most
    method: Literal["best-of-k", "teacher"] = "best-of-k"  # how the hard examples get their targets
    k: int = 8  # best-of-k samples
    teacher_url: str = TeacherSettings.url  # method teacher: OpenAI-compatible API base
    teacher_model: str = TeacherSettings.model
    steps: int = 60  # SFT steps
    lr: float = 1e-4
    batch_size: int = 32
    workers: int = 1  # Ray Train workers
    max_new_tokens: int | None = None  # relabel cap; None = the label config's
    out: str = ""  # folder of the new AV; "" = ./checkpoints/<run_id>
