"""One training worker's whole run (SFT or GRPO), Ray-free: jobs/train.py hands in a WorkerEnv built from Ray Train.

The env says who this worker is (rank, world), wraps models for data parallelism (DDP/FSDP, identity alone),
reports metrics with an optional state to checkpoint, and carries the state to resume from. Rank 0 writes the final
checkpoint in the release layout (HF files + nla_meta.yaml, + value_head.safetensors for an AR) and metrics.json.
Under FSDP every rank takes part in whatever forwards or gathers the sharded models (evaluation, checkpoint state,
the final weights; nla.train.sharding); rank 0 alone writes files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nla import hf
from nla.ar import ARModel
from nla.av import AVPrompter
from nla.checkpoint import save_ar, save_av
from nla.client import eos_ids
from nla.checks import check_meta
from nla.lake.store import Lake
from nla.meta import NLAMeta
from nla.settings import torch_dtype
from nla.train.config import TrainJobConfig
from nla.train.data import Examples, load_examples
from nla.train.grpo import GRPOTrainer
from nla.train.loop import index_batches, train
from nla.train.sft import AVSFTData, ar_eval, ar_loss, av_loss, trained_meta
from nla.train.sharding import gathered, is_sharded, load_optimizer_state, model_state, optimizer_state, shard, whole


@dataclass
class WorkerEnv:
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    wrap: Callable[[Any], Any] = lambda m: m  # DDP / FSDP under Ray Train (FSDP shards the module in place)
    report: Callable[[dict[str, Any], dict[str, Any] | None], None] = lambda metrics, state: None
    resume: dict[str, Any] | None = None  # the state of the last checkpoint, if the run restarted
    storage_options: dict[str, str] | None = None  # the lake's, as the driver resolved them (a node may have no AWS_*)
    log: Callable[[str], None] = print


def load_av(folder: str, dtype: torch.dtype, device: str) -> tuple[Any, Any, NLAMeta]:
    tok = hf.load_tokenizer(folder)
    model = hf.load_causal_lm(folder, dtype=dtype).to(device)
    return model, tok, check_meta(NLAMeta.load(folder), "av", tok, model.config)


def load_ar(folder: str, dtype: torch.dtype, device: str) -> tuple[ARModel, Any, NLAMeta]:
    tok = hf.load_tokenizer(folder)
    ar = ARModel.from_pretrained(folder, dtype=dtype).to(device)
    meta = NLAMeta.load(folder)
    if meta.role != "ar":
        check_meta(meta, "ar", tok, ar.lm.config)
    meta.validate(tok)
    return ar, tok, meta


def datasets(cfg: TrainJobConfig, env: WorkerEnv, d: int, need_explanations: bool) -> tuple[Examples, Examples]:
    lake = Lake(cfg.lake or None, storage_options=env.storage_options)
    data = load_examples(lake, cfg.data, d=d, need_explanations=need_explanations, limit=cfg.limit)
    if cfg.eval_data:
        return data, load_examples(lake, cfg.eval_data, d=d, need_explanations=need_explanations, limit=cfg.limit)
    return data.split_by_act(cfg.eval_fraction, seed=cfg.sft.seed)


def my_part(ex: Examples, env: WorkerEnv) -> Examples:
    return ex.subset(np.arange(env.rank, len(ex), env.world)) if env.world > 1 else ex


def checkpoint_due(step: int, cfg: TrainJobConfig, total: int) -> bool:
    every = cfg.scaling.checkpoint_every
    return step == total or (every > 0 and step % every == 0)


class MetricsLog:
    """Rank 0 appends one JSON line per step to out/metrics.jsonl (the learning curve)."""

    def __init__(self, out: Path, env: WorkerEnv) -> None:
        self.path, self.on = out / "metrics.jsonl", env.rank == 0
        if self.on:
            out.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        if self.on:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def run_sft(cfg: TrainJobConfig, env: WorkerEnv, out: Path,
            data: tuple[Examples, Examples] | None = None) -> dict[str, Any]:
    """SFT of cfg.role; `data` = (train, held-out) examples in hand instead of cfg.data's table (benches)."""
    dtype = torch_dtype(cfg.dtype)
    if cfg.role == "av":
        model, tok, meta = load_av(cfg.init, dtype, env.device)
    else:
        model, tok, meta = load_ar(cfg.init, dtype, env.device)
    train_ex, eval_ex = data or datasets(cfg, env, meta.d_model, need_explanations=True)
    part = my_part(train_ex, env)
    start = 0
    if env.resume:  # the whole state dict, loaded before wrapping (FSDP then shards the loaded weights)
        model.load_state_dict(env.resume["model"])
        start = int(env.resume["step"])
        env.log(f"[sft] rank {env.rank} resumed from step {start}")
    module = model
    wrapped = env.wrap(model)
    metrics, t0 = MetricsLog(out, env), time.perf_counter()
    s = cfg.sft
    if cfg.role == "av":
        prompter = AVPrompter(module.get_input_embeddings(), tok, meta)
        data, held = AVSFTData(prompter, part.vectors, part.explanations), None

        def loss_fn(idx: Any) -> torch.Tensor:
            return av_loss(wrapped, prompter, data.batch(idx))

        @torch.no_grad()
        def evaluate() -> dict[str, float]:
            nonlocal held
            held = held or AVSFTData(prompter, eval_ex.vectors, eval_ex.explanations)
            module.eval()
            losses = [float(av_loss(module, prompter, held.batch(list(range(i, min(i + s.batch_size, len(held)))))))
                      for i in range(0, len(held), s.batch_size)]
            module.train()
            return {"eval_loss": float(np.mean(losses))}
    else:
        def loss_fn(idx: Any) -> torch.Tensor:
            return ar_loss(wrapped, tok, meta, [part.explanations[i] for i in idx], part.vectors[torch.as_tensor(idx)])

        def evaluate() -> dict[str, float]:
            return ar_eval(module, tok, meta, eval_ex.explanations, eval_ex.vectors)

    def on_step(step: int, loss: float, opt: torch.optim.Optimizer) -> None:
        row = {"step": step, "loss": loss, "seconds": time.perf_counter() - t0}
        metrics.write(row)
        if checkpoint_due(step, cfg, s.steps):  # every rank gathers (FSDP), rank 0 reports the state
            state = {"model": model_state(module), "opt": optimizer_state(module, opt), "step": step}
            env.report(row, state if env.rank == 0 else None)

    def load_opt(opt: torch.optim.Optimizer) -> None:
        assert env.resume is not None
        load_optimizer_state(module, opt, env.resume["opt"])

    module.train()
    result = train([p for p in wrapped.parameters() if p.requires_grad], loss_fn,
                   index_batches(len(part), min(s.batch_size, len(part)), s.seed + env.rank), s, evaluate=evaluate,
                   log=env.log if env.rank == 0 else None, name=f"{cfg.role}-sft", start_step=start,
                   load_opt=load_opt if env.resume else None, on_step=on_step)
    module.eval()
    final = whole(module, lambda: (load_av if cfg.role == "av" else load_ar)(cfg.init, dtype, "cpu")[0])
    summary = {"algo": "sft", "role": cfg.role, "steps": s.steps, "resumed_from": start,
               "first_loss": result.first_loss if result.losses else None,
               "last_loss": result.last_loss if result.losses else None, **result.evals[-1],
               "train_examples": len(train_ex), "eval_examples": len(eval_ex), "workers": env.world,
               "seconds": result.seconds}
    if env.rank == 0:
        loss_type = "response_ce" if cfg.role == "av" else "mse_nrm"
        new_meta = trained_meta(meta, s, parent=str(cfg.init), trained_on=cfg.data, loss_type=loss_type)
        (save_av if cfg.role == "av" else save_ar)(final, tok, new_meta, out / cfg.role)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


@torch.no_grad()
def roundtrip_fve(av: Any, tok: Any, av_meta: NLAMeta, ar: ARModel, ar_meta: NLAMeta, eos: set[int],
                  vectors: torch.Tensor, max_new_tokens: int) -> dict[str, float]:
    """Held-out round trip, greedy: mse and fve_nrm (a sample without tags is scored on its raw output).
    Sharded models (FSDP): every rank must call it, with the same vectors."""
    from nla.av import HFBackend, SamplingParams, decode_generations
    from nla.metrics import fve_nrm, mse_nrm

    was = av.training
    av.eval()
    ar_was = ar.training
    ar.eval()
    prompter = AVPrompter(av.get_input_embeddings(), tok, av_meta)
    with gathered(av):
        embeds = prompter.prompt_embeds(vectors)
    gens = decode_generations(tok, HFBackend(av, tok, eos, sharded=is_sharded(av)).generate(
        embeds, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)))
    texts = [g.explanation or g.raw_output.strip() or "(empty)" for g in gens]
    mses = []
    dev = ar.value_head.weight.device
    vectors = vectors.float().cpu()
    for i in range(0, len(texts), 128):
        enc = ar.encode(tok, ar_meta.ar_template, texts[i:i + 128])
        pred = ar(enc["input_ids"].to(dev), enc["attention_mask"].to(dev)).float().cpu()
        mses.append(mse_nrm(pred, vectors[i:i + 128], ar_meta.mse_scale))
    mse = torch.cat(mses)
    av.train(was)
    ar.train(ar_was)
    return {"eval_mse": float(mse.mean()), "eval_fve_nrm": fve_nrm(mse, vectors, ar_meta.mse_scale),
            "eval_ok_fraction": float(np.mean([g.status == "ok" for g in gens]))}


def run_grpo(cfg: TrainJobConfig, env: WorkerEnv, out: Path,
             data: tuple[Examples, Examples] | None = None) -> dict[str, Any]:
    """GRPO of cfg.init against cfg.ar; `data` = (train, held-out) examples in hand instead of cfg.data's table."""
    dtype, g = torch_dtype(cfg.dtype), cfg.grpo
    policy, tok, av_meta = load_av(cfg.init, dtype, env.device)
    reference = hf.load_causal_lm(cfg.init, dtype=dtype).to(env.device)
    ar, _, ar_meta = load_ar(cfg.ar, dtype, env.device)
    if ar_meta.d_model != av_meta.d_model or ar_meta.layer != av_meta.layer:
        from nla.errors import NLAConfigError

        raise NLAConfigError(f"--ar {cfg.ar}: reads layer {ar_meta.layer}, d {ar_meta.d_model}; the AV {cfg.init} "
                             f"layer {av_meta.layer}, d {av_meta.d_model}. Fix: pass the AR of the same pair.")
    train_ex, eval_ex = data or datasets(cfg, env, av_meta.d_model, need_explanations=False)
    part = my_part(train_ex, env)
    if env.resume:
        policy.load_state_dict(env.resume["policy"])
        ar.load_state_dict(env.resume["ar"])
        env.log(f"[grpo] rank {env.rank} resumed from step {env.resume['trainer']['steps_done']}")
    eos = eos_ids(Path(cfg.init), tok)
    wrapped_policy, wrapped_ar = env.wrap(policy), env.wrap(ar)
    sharded = is_sharded(policy)  # FSDP shards in place; DDP leaves `policy` the plain module
    if sharded:  # the frozen reference is sharded like the policy (DDP has nothing to do for a model that never trains)
        shard(reference, env.device)
    trainer = GRPOTrainer(wrapped_policy, reference, wrapped_ar, tok, av_meta, ar_meta, g, eos)
    if env.resume:
        trainer.load_state_dict(env.resume["trainer"])
    held = eval_ex.vectors[:cfg.eval_samples]
    metrics, evals, t0 = MetricsLog(out, env), [], time.perf_counter()

    def evaluate(step: int) -> None:
        if env.rank != 0 and not sharded:  # FSDP: its forwards are collective, every rank runs the same round trip
            return
        e = {"step": step, **roundtrip_fve(policy, tok, av_meta, ar, ar_meta, eos, held, g.max_new_tokens)}
        evals.append(e)
        if env.rank == 0:
            env.log(f"[grpo] eval step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in e.items() if k != "step"))

    if trainer.steps_done == 0:
        evaluate(0)
    rng = np.random.default_rng(g.seed + env.rank)
    order = rng.permutation(len(part))
    while trainer.steps_done < g.steps:
        i = trainer.steps_done * g.batch_size % max(1, len(part))
        idx = np.take(order, np.arange(i, i + g.batch_size), mode="wrap")
        row = trainer.step(part.vectors[idx])
        row["elapsed"] = time.perf_counter() - t0
        metrics.write(row)
        step = trainer.steps_done
        if env.rank == 0 and g.log_every and step % g.log_every == 0:
            env.log(f"[grpo] step {step}/{g.steps} reward {row['reward_mean']:.3f}±{row['reward_std']:.3f} "
                    f"fve {row['fve_nrm']:.3f} kl {row['kl']:.4f} len {row['response_tokens']:.1f} "
                    f"failed {row['failed_fraction']:.2f} ({row['elapsed']:.0f}s)")
        if g.eval_every and step % g.eval_every == 0 and step < g.steps:
            evaluate(step)
        if checkpoint_due(step, cfg, g.steps):  # every rank gathers (FSDP), rank 0 reports the state
            state = {"policy": model_state(policy), "ar": model_state(ar), "trainer": trainer.state_dict()}
            env.report({k: v for k, v in row.items() if isinstance(v, (int, float))}, state if env.rank == 0 else None)
    evaluate(g.steps)
    summary = {"algo": "grpo", "steps": g.steps, "workers": env.world, "seconds": time.perf_counter() - t0,
               "train_examples": len(train_ex), "eval_examples": len(held), "evals": evals,
               "config": asdict(g)}
    final_av = whole(policy, lambda: load_av(cfg.init, dtype, "cpu")[0])
    final_ar = whole(ar, lambda: load_ar(cfg.ar, dtype, "cpu")[0])
    if env.rank == 0:
        summary.update(start=evals[0] if evals and evals[0]["step"] == 0 else None, end=evals[-1])
        save_av(final_av, tok, av_meta.derive(stage="rl", parent_checkpoints=[str(cfg.init)], trained_on=cfg.data,
                                              training={"lr": g.av_lr, "loss_type": "grpo", "kl_coef": g.kl_coef,
                                                        "group": g.group, "steps": g.steps}), out / "av")
        save_ar(final_ar, tok, ar_meta.derive(stage="rl", parent_checkpoints=[str(cfg.ar)], trained_on=cfg.data,
                                              training={"lr": g.ar_lr, "loss_type": "mse_nrm on AV samples",
                                                        "steps": g.steps}), out / "ar")
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
