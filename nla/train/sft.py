"""Supervised fine-tuning of the pair: AV on (activation -> `<explanation>` text), AR on (text -> activation).

AV: the activation is injected at the marker, cross-entropy on the response tokens only (explanation in its tags,
then the end-of-turn token). AR: mse_nrm between the reconstruction and the activation, both at L2 norm mse_scale.
The examples are (vectors, explanations) pairs in memory; streaming them from a table is jobs/' business.
"""

from __future__ import annotations

from typing import Any

import torch

from nla import prompt as P
from nla.ar import ARModel
from nla.av import AVPrompter
from nla.meta import NLAMeta
from nla.metrics import fve_nrm, mse_nrm
from nla.train.loop import TrainConfig, TrainResult, index_batches, train


class AVSFTData:
    """Tokenised AV examples: the canonical prompt (marker inside) followed by each response."""

    def __init__(self, prompter: AVPrompter, vectors: torch.Tensor, explanations: list[str]) -> None:
        tok = prompter.tokenizer
        eos = tok.eos_token_id
        self.prompt = prompter.canonical_ids
        self.responses = [tok.encode(P.wrap_explanation(e), add_special_tokens=False) + [eos] for e in explanations]
        self.vectors = vectors.float()
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos

    def __len__(self) -> int:
        return len(self.responses)

    def batch(self, idx: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids (B,T), attention_mask (B,T), labels (B,T) with -100 off-response, vectors (B,d))."""
        seqs = [self.prompt + self.responses[i] for i in idx]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), T), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        p = len(self.prompt)
        for b, s in enumerate(seqs):
            ids[b, :len(s)] = torch.tensor(s)
            labels[b, p:len(s)] = ids[b, p:len(s)]
            mask[b, :len(s)] = 1
        return ids, mask, labels, self.vectors[torch.as_tensor(idx)]


def av_loss(model: Any, prompter: AVPrompter, batch: tuple) -> torch.Tensor:
    """Response cross-entropy. `model` may be DDP/FSDP-wrapped: the activation is injected inside its forward, by
    a hook on the embedding layer the prompter holds (the same module object, wrapped or not)."""
    ids, mask, labels, vectors = batch
    dev = prompter.embedding.weight.device
    with prompter.injecting(vectors.to(dev)):  # activation at the marker
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(dev),
                                             ignore_index=-100)


def train_av(model: Any, tokenizer: Any, meta: NLAMeta, train_set: tuple[torch.Tensor, list[str]],
             eval_set: tuple[torch.Tensor, list[str]], cfg: TrainConfig, *, log: Any = print) -> TrainResult:
    """Fine-tune the AV in place. Eval metric: response cross-entropy on the held-out set."""
    prompter = AVPrompter(model.get_input_embeddings(), tokenizer, meta)
    data, held = AVSFTData(prompter, *train_set), AVSFTData(prompter, *eval_set)
    model.train()

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        losses = [av_loss(model, prompter, held.batch(list(range(s, min(s + cfg.batch_size, len(held))))))
                  for s in range(0, len(held), cfg.batch_size)]
        model.train()
        return {"eval_loss": float(torch.stack(losses).mean())}

    result = train([p for p in model.parameters() if p.requires_grad],
                   lambda idx: av_loss(model, prompter, data.batch(idx)),
                   index_batches(len(data), cfg.batch_size, cfg.seed), cfg, evaluate=evaluate, log=log, name="av-sft")
    model.eval()
    return result


def ar_loss(ar: ARModel, tokenizer: Any, meta: NLAMeta, explanations: list[str], vectors: torch.Tensor) -> torch.Tensor:
    """Mean mse_nrm of the reconstructions. `ar` may be DDP/FSDP-wrapped (the forward goes through the wrapper)."""
    module = getattr(ar, "module", ar)
    enc = module.encode(tokenizer, meta.ar_template, explanations)
    dev = next(ar.parameters()).device
    pred = ar(enc["input_ids"].to(dev), enc["attention_mask"].to(dev))
    return mse_nrm(pred, vectors.to(dev), meta.mse_scale).mean()


@torch.no_grad()
def ar_eval(ar: ARModel, tokenizer: Any, meta: NLAMeta, explanations: list[str], vectors: torch.Tensor,
            batch_size: int = 128) -> dict[str, float]:
    """Held-out mse_nrm and fve_nrm of the AR on (explanation, vector) pairs."""
    was_training = ar.training
    ar.eval()
    mses = []
    dev = ar.value_head.weight.device
    for s in range(0, len(explanations), batch_size):
        enc = ar.encode(tokenizer, meta.ar_template, explanations[s:s + batch_size])
        pred = ar(enc["input_ids"].to(dev), enc["attention_mask"].to(dev)).float().cpu()
        mses.append(mse_nrm(pred, vectors[s:s + batch_size], meta.mse_scale))
    mse = torch.cat(mses)
    ar.train(was_training)
    return {"eval_mse": float(mse.mean()), "eval_fve": fve_nrm(mse, vectors, meta.mse_scale)}


def train_ar(ar: ARModel, tokenizer: Any, meta: NLAMeta, train_set: tuple[torch.Tensor, list[str]],
             eval_set: tuple[torch.Tensor, list[str]], cfg: TrainConfig, *, log: Any = print) -> TrainResult:
    """Fine-tune the AR in place on mse_nrm. Eval metrics: held-out mse_nrm and fve_nrm."""
    vectors, texts = train_set
    ar.train()
    result = train([p for p in ar.parameters() if p.requires_grad],
                   lambda idx: ar_loss(ar, tokenizer, meta, [texts[i] for i in idx], vectors[torch.as_tensor(idx)]),
                   index_batches(len(texts), cfg.batch_size, cfg.seed), cfg,
                   evaluate=lambda: ar_eval(ar, tokenizer, meta, eval_set[1], eval_set[0]), log=log, name="ar-sft")
    ar.eval()
    return result


def trained_meta(meta: NLAMeta, cfg: TrainConfig, *, parent: str, trained_on: str, loss_type: str) -> NLAMeta:
    """The sidecar of a checkpoint produced by SFT: stage sl, its parent, data and hyperparameters."""
    return meta.derive(stage="sl", parent_checkpoints=[parent], trained_on=trained_on,
                       training={"lr": cfg.lr, "loss_type": loss_type, "global_batch_size": cfg.batch_size *
                                 cfg.grad_accum, "steps": cfg.steps, "dtype": cfg.dtype})
