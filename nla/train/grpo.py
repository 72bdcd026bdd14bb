"""GRPO on the AV with the AR trained beside it, as NLA_SPEC describes (plain torch; jobs/train.py adds Ray Train).

One step, for B activations:
1. the AV samples k explanations per activation (a group; temperature 1, response-length cap);
2. reward = -mse_nrm of the LIVE AR's reconstruction (-2 for a sample without tags or truncated at the cap);
3. advantages are normalised within each group (no value function);
4. AV loss per token = -A * ratio + kl_coef * k3(ref || policy), ratio = exp(logp - logp.detach()) (one on-policy
   update per batch), averaged over each response's tokens then over responses;
5. the AR takes a supervised mse_nrm step on the AV's own ok samples, with its own optimiser and learning rate.
At step 0 the reward path's mse (AR in eval mode, no grad) must match the training path's (the same samples through
the AR's loss) within 10%, or the run stops: a mismatch means rewards and training disagree about the AR.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nla.ar import ARModel
from nla.av import AVPrompter, SamplingParams, decode_generations
from nla.errors import NLAError
from nla.fast.decode import sampling_backend
from nla.fast.sampling import sample_key
from nla.meta import NLAMeta
from nla.metrics import fve_nrm, mse_nrm
from nla.train.sharding import gathered, is_sharded, load_optimizer_state, optimizer_state

FAILED_REWARD = -2.0


@dataclass
class GRPOConfig:
    steps: int = 100  # optimiser steps
    batch_size: int = 16  # activations per step per worker (each gets `group` samples)
    group: int = 8  # samples per activation (the release: 4-8)
    max_new_tokens: int = 150  # response-length cap (the release's RL cap); hitting it = failed, reward -2
    micro_batch: int = 64  # sequences per forward/backward of the AV loss (0 = all at once); bounds memory
    temperature: float = 1.0
    av_lr: float = 5e-6  # the release: ~1e-6..1e-5 at 7B; small models tolerate more
    ar_lr: float = 2e-5  # the release: ~1e-5..5e-5
    kl_coef: float = 0.01  # k3 estimator of KL(policy || reference), inside the loss
    grad_clip: float = 1.0
    train_ar: bool = True  # the AR learns on the AV's samples at the same time
    step0_tolerance: float = 0.10  # reward-path vs training-path mse at step 0
    eval_every: int = 0  # steps between held-out round-trip evaluations; 0 = start and end only
    seed: int = 0
    log_every: int = 10
    fast_sampler: bool = True  # roll out with nla.fast.decode.FastBackend where it applies (one GPU, unsharded)


class GRPOMismatch(NLAError):
    """The reward path and the training path disagree about the AR's mse at step 0."""


def group_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-4) -> torch.Tensor:
    """(B*group,) rewards, grouped consecutively -> (reward - group mean) / (group std + eps)."""
    r = rewards.view(-1, group)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True, unbiased=False) + eps)).flatten()


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def response_batch(prompt_ids: list[int], responses: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded (prompt + response) ids, attention mask and a mask of the response positions to score."""
    seqs = [prompt_ids + r for r in responses]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    resp = torch.zeros((len(seqs), T), dtype=torch.bool)
    p = len(prompt_ids)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
        resp[b, p:len(s)] = True
    return ids, mask, resp


def token_logprobs(model: Any, prompter: AVPrompter, ids: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor,
                   start: int = 1) -> torch.Tensor:
    """(B, T-start) log p(ids[:, t] | ids[:, :t]) for t >= start, the activation injected at the marker.

    Only the logits of positions start-1..T-2 are computed (`logits_to_keep`): the prompt's are never needed.
    """
    dev = prompter.embedding.weight.device
    keep = ids.shape[1] - start + 1
    with prompter.injecting(vectors.to(dev)):  # inside the forward: FSDP gathers the embedding only there
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False,
                       logits_to_keep=keep).logits[:, :-1].float()
    target = ids[:, start:].to(dev).unsqueeze(-1)
    return (logits.gather(-1, target) - torch.logsumexp(logits, -1, keepdim=True)).squeeze(-1)


class GRPOTrainer:
    """Holds the policy AV, its frozen reference, the AR and both optimisers. `step(vectors)` does one update.

    `policy` / `ar` may be DDP-wrapped or FSDP-sharded (jobs/train.py), and the reference sharded like the policy;
    generation and prompting use the unwrapped modules. Under FSDP every forward is collective, so every rank runs
    the same number of each (the AR's reward path too, on a dummy sample when a rank has no ok one).
    """

    def __init__(self, policy: Any, reference: Any, ar: Any, tokenizer: Any, av_meta: NLAMeta, ar_meta: NLAMeta,
                 cfg: GRPOConfig, eos_ids: set[int]) -> None:
        self.policy, self.ar, self.cfg = policy, ar, cfg
        self.av_module = getattr(policy, "module", policy)
        self.ar_module: ARModel = getattr(ar, "module", ar)
        self.reference = reference.eval().requires_grad_(False)
        self.tokenizer, self.av_meta, self.ar_meta = tokenizer, av_meta, ar_meta
        self.prompter = AVPrompter(self.av_module.get_input_embeddings(), tokenizer, av_meta)
        self.ref_prompter = AVPrompter(self.reference.get_input_embeddings(), tokenizer, av_meta)
        self.backend = sampling_backend(self.av_module, tokenizer, eos_ids, sharded=is_sharded(self.av_module),
                                        fast=cfg.fast_sampler, refresh_prefix=True)  # the policy's weights move
        self.eos_ids = eos_ids
        self.av_opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.av_lr,
                                        betas=(0.9, 0.95), weight_decay=0.0)
        self.ar_opt = torch.optim.AdamW([p for p in ar.parameters() if p.requires_grad], lr=cfg.ar_lr,
                                        betas=(0.9, 0.95), weight_decay=0.0)
        self.steps_done = 0
        self.reward_path_checked = False  # the step-0 check, made at the first step that has an ok sample

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers' states and the step count. Collective under FSDP (every rank calls it)."""
        return {"av_opt": optimizer_state(self.av_module, self.av_opt),
                "ar_opt": optimizer_state(self.ar_module, self.ar_opt), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.av_module, self.av_opt, state["av_opt"])
        load_optimizer_state(self.ar_module, self.ar_opt, state["ar_opt"])
        self.steps_done = int(state["steps_done"])

    @torch.no_grad()
    def sample(self, vectors: torch.Tensor, seed: int) -> tuple[list[list[int]], list[Any]]:
        """k samples per vector (grouped consecutively): response token ids (with the stop token) and parses."""
        self.av_module.eval()
        reps = vectors.repeat_interleave(self.cfg.group, 0)
        with gathered(self.av_module):
            embeds = self.prompter.prompt_embeds(reps)
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature, seed=seed)
        keys = [sample_key(i // self.cfg.group, i % self.cfg.group) for i in range(len(embeds))]
        outputs = self.backend.generate_with_stops(embeds, params, keys)
        gens = decode_generations(self.tokenizer, [(toks, stop is None) for toks, stop in outputs])
        # the stop token the policy chose is part of its response: score it too (absent when cut at the cap)
        responses = [toks + ([] if stop is None else [stop]) for toks, stop in outputs]
        self.av_module.train()
        return responses, gens

    def ar_mse(self, explanations: list[str], vectors: torch.Tensor) -> torch.Tensor:
        enc = self.ar_module.encode(self.tokenizer, self.ar_meta.ar_template, explanations)
        dev = self.ar_module.value_head.weight.device
        pred = self.ar(enc["input_ids"].to(dev), enc["attention_mask"].to(dev))
        return mse_nrm(pred.float(), vectors.to(dev).float(), self.ar_meta.mse_scale)

    def rewards(self, gens: list[Any], responses: list[list[int]],
                reps: torch.Tensor) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        """(rewards (N,), the indices of the ok samples, their mse_nrm) for N samples of the (N, d) vectors `reps`.

        An ok sample's reward is -mse_nrm of the live AR's reconstruction (the AR as trained so far, in eval mode, no
        grad); a failed one's is FAILED_REWARD: no tags, or cut at the length cap (even with its tags closed)."""
        ok = [i for i, (g, r) in enumerate(zip(gens, responses)) if g.status == "ok" and r and r[-1] in self.eos_ids]
        rewards = torch.full((len(gens),), FAILED_REWARD)
        # a worker with no ok sample still runs the AR, on a dummy (unused): its forward is collective (DDP, FSDP)
        texts = [gens[i].explanation for i in ok] or ["."]
        with torch.no_grad():
            self.ar_module.eval()
            reward_mse = self.ar_mse(texts, reps[ok or [0]]).cpu()
            self.ar_module.train()
        ok_mse = reward_mse if ok else torch.empty(0)
        if ok:
            rewards[ok] = -ok_mse
        return rewards, ok, ok_mse

    def step(self, vectors: torch.Tensor) -> dict[str, float]:
        cfg, t0 = self.cfg, time.perf_counter()
        reps = vectors.repeat_interleave(cfg.group, 0)
        responses, gens = self.sample(vectors, seed=cfg.seed * 1_000_003 + self.steps_done)
        t_sample = time.perf_counter() - t0  # the rollout: the samples are on the host, so the GPU is done
        rewards, ok, ok_mse = self.rewards(gens, responses, reps)
        use = ok or [0]  # the AR's training step below runs on every worker (a dummy sample where none is ok)
        texts = [gens[i].explanation for i in ok] or ["."]
        adv = group_advantages(rewards, cfg.group)

        ids, mask, resp = response_batch(self.prompter.canonical_ids, responses, self.backend.pad_id)
        start = len(self.prompter.canonical_ids)
        n, mb = len(responses), cfg.micro_batch or len(responses)
        self.av_opt.zero_grad(set_to_none=True)
        av_loss, kl_sum, kl_tokens = 0.0, 0.0, 0.0
        no_sync = getattr(self.policy, "no_sync", None)
        for lo in range(0, n, mb):  # micro-batches: memory bounded by micro_batch x response length x vocab
            sl = slice(lo, min(n, lo + mb))
            # DDP: all-reduce once, on the last micro-batch (DDP decides at the forward, so both go inside no_sync)
            with no_sync() if no_sync is not None and lo + mb < n else contextlib.nullcontext():
                logp = token_logprobs(self.policy, self.prompter, ids[sl], mask[sl], reps[sl], start)
                with torch.no_grad():
                    ref_logp = token_logprobs(self.reference, self.ref_prompter, ids[sl], mask[sl], reps[sl], start)
                tmask = resp[sl, start:].to(logp.device).float()
                ratio = torch.exp(logp - logp.detach())
                kl = k3(logp, ref_logp)
                per_token = -adv[sl].to(logp.device).unsqueeze(1) * ratio + cfg.kl_coef * kl
                loss = ((per_token * tmask).sum(1) / tmask.sum(1).clamp(min=1)).sum() / n  # mean over all responses
                loss.backward()
            av_loss += float(loss.detach())
            kl_sum += float((kl.detach() * tmask).sum())
            kl_tokens += float(tmask.sum())
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        self.av_opt.step()

        ar_loss = float("nan")
        if cfg.train_ar:
            # with no ok sample this worker still takes part (zero loss): DDP/FSDP reduce every step on every rank
            train_mse = self.ar_mse(texts, reps[use])
            if not self.reward_path_checked and ok:  # step 0, or the first step with an ok sample
                self.check_step0(ok_mse, train_mse.detach().cpu())
                self.reward_path_checked = True
            loss = train_mse.mean() * (1.0 if ok else 0.0)
            self.ar_opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.ar.parameters(), cfg.grad_clip)
            self.ar_opt.step()
            ar_loss = float(loss.detach())
        self.steps_done += 1
        kl_mean = kl_sum / max(kl_tokens, 1.0)
        return {"step": self.steps_done, "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                "fve_nrm": fve_nrm(ok_mse, reps[ok], self.ar_meta.mse_scale) if len(ok) > 1 else float("nan"),
                "mse_ok": float(ok_mse.mean()) if ok else float("nan"), "kl": kl_mean,
                "response_tokens": float(np.mean([g.n_tokens for g in gens])),
                "failed_fraction": 1 - len(ok) / len(gens), "av_loss": av_loss, "ar_loss": ar_loss,
                "seconds": time.perf_counter() - t0, "sample_seconds": t_sample}

    def check_step0(self, reward_mse: torch.Tensor, train_mse: torch.Tensor) -> None:
        a, b = float(reward_mse.mean()), float(train_mse.mean())
        if abs(a - b) > self.cfg.step0_tolerance * max(abs(a), 1e-8):
            raise GRPOMismatch(f"step 0: the reward path's mse {a:.4f} and the training path's {b:.4f} differ by "
                               f"more than {self.cfg.step0_tolerance:.0%}. Fix: score and train the AR with the same "
                               "template, dtype and padding (nla_meta.yaml of the AV and AR must match).")
