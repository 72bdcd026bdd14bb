"""The training loop every SFT in nla uses: AdamW, warmup + cosine, accumulation, clipping, float32/bfloat16
autocast, evaluation.

It knows nothing of AV/AR: a caller hands it a `loss_fn(batch) -> loss` and a batch iterator. Plain torch: Ray
Train wraps this loop in jobs/ without changing it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from nla.settings import TrainDType


@dataclass
class TrainConfig:
    steps: int = 400  # optimiser steps
    batch_size: int = 64  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step (global batch = batch_size * grad_accum)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0
    warmup_steps: int = 20  # linear warmup, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    dtype: TrainDType = "float32"  # bfloat16 = autocast to bfloat16 (the weights stay as loaded)
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    seed: int = 0
    log_every: int = 50

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "global_batch_size": self.batch_size * self.grad_accum}


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per optimiser step
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def window(self) -> int:
        """Steps averaged at each end: 10, or half of a run shorter than 20 steps, so the two ends never share a
        step (a 6-step run compares steps 1-3 with 4-6; a 1-step run has one loss for both)."""
        return max(1, min(10, len(self.losses) // 2))

    @property
    def first_loss(self) -> float:
        return float(np.mean(self.losses[:self.window]))

    @property
    def last_loss(self) -> float:
        return float(np.mean(self.losses[-self.window:]))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def index_batches(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Endless shuffled epochs of example indices."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]


def train(params: list[torch.nn.Parameter], loss_fn: Callable[[Any], torch.Tensor], batches: Iterator[Any],
          cfg: TrainConfig, *, evaluate: Callable[[], dict[str, float]] | None = None,
          log: Callable[[str], None] | None = print, name: str = "train", start_step: int = 0,
          load_opt: Callable[[torch.optim.Optimizer], None] | None = None,
          on_step: Callable[[int, float, torch.optim.Optimizer], None] | None = None) -> TrainResult:
    """Run cfg.steps optimiser steps of loss_fn over batches; evaluate every cfg.eval_every steps and at the end.

    Resuming: start_step skips the steps (and their batches) already done, and load_opt(optimizer) restores the
    optimiser's state once it is built (under FSDP it must be built over the sharded parameters first).
    on_step(step_done, loss, optimizer) runs after every step (checkpointing and metric reports hook in there).
    """
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    if load_opt is not None:
        load_opt(opt)
    for _ in range(start_step * cfg.grad_accum):
        next(batches)
    result, t0 = TrainResult(), time.perf_counter()
    autocast = torch.autocast("cpu" if params[0].device.type == "cpu" else "cuda", dtype=torch.bfloat16,
                              enabled=cfg.dtype == "bfloat16")
    for step in range(start_step, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        total = 0.0
        for _ in range(cfg.grad_accum):
            with autocast:
                loss = loss_fn(next(batches)) / cfg.grad_accum
            loss.backward()
            total += loss.item()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        result.losses.append(total)
        if on_step:
            on_step(step + 1, total, opt)
        if log and cfg.log_every and (step + 1) % cfg.log_every == 0:
            log(f"[{name}] step {step + 1}/{cfg.steps} loss {np.mean(result.losses[-cfg.log_every:]):.4f} "
                f"lr {lr_at(step, cfg):.2e} ({time.perf_counter() - t0:.0f}s)")
        if evaluate and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            result.evals.append({"step": step + 1, **evaluate()})
    if evaluate:
        result.evals.append({"step": cfg.steps, **evaluate()})
        if log:
            log(f"[{name}] eval " + " ".join(f"{k} {v:.4f}" for k, v in result.evals[-1].items() if k != "step"))
    result.seconds = time.perf_counter() - t0
    return result
