"""The SFT loops: schedule, accumulation, bf16, and a real decrease of both losses on a tiny pair."""

from __future__ import annotations

import pytest
import torch

from nla import hf
from nla.ar import ARModel
from nla.meta import NLAMeta
from nla.train.loop import TrainConfig, lr_at
from nla.train.sft import AVSFTData, train_ar, train_av, trained_meta
from nla.av import AVPrompter


def _data(d: int, n: int = 48):
    g = torch.Generator().manual_seed(0)
    topics = ["weather", "music", "finance", "health"]
    centers = torch.randn(4, d, generator=g) * 3
    labels = torch.arange(n) % 4
    vectors = centers[labels] + 0.3 * torch.randn(n, d, generator=g)
    texts = [f"The text is about {topics[i]}." for i in labels.tolist()]
    return vectors, texts


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4, rel=0.05)
    assert lr_at(50, cfg) < lr_at(20, cfg)


@pytest.mark.parametrize("dtype, accum", [("fp32", 1), ("bf16", 2)])
def test_ar_sft_learns(pair, dtype, accum):
    meta = NLAMeta.load(pair[1])
    ar = ARModel.from_pretrained(pair[1])
    tok = hf.load_tokenizer(pair[1])
    vectors, texts = _data(meta.d_model)
    cfg = TrainConfig(steps=40, batch_size=16, grad_accum=accum, lr=3e-3, warmup_steps=5, dtype=dtype, log_every=0)
    res = train_ar(ar, tok, meta, (vectors, texts), (vectors[:16], texts[:16]), cfg, log=None)
    assert res.last_loss < res.first_loss * 0.7
    assert res.evals[-1]["eval_fve"] > 0.3
    new = trained_meta(meta, cfg, parent=str(pair[1]), trained_on="unit", loss_type="mse_nrm")
    assert new.stage == "sl" and new.raw["training"]["global_batch_size"] == 16 * accum


def test_av_sft_learns_response_only(pair):
    meta = NLAMeta.load(pair[0])
    model = hf.load_causal_lm(pair[0])
    tok = hf.load_tokenizer(pair[0])
    vectors, texts = _data(meta.d_model)
    data = AVSFTData(AVPrompter(model.get_input_embeddings(), tok, meta), vectors, texts)
    ids, mask, labels, _ = data.batch([0, 1])
    p = len(data.prompt)
    assert (labels[:, :p] == -100).all() and (labels[0, p:mask[0].sum()] == ids[0, p:mask[0].sum()]).all()
    assert tok.decode(ids[0, p:mask[0].sum()]).startswith("<explanation>\n")
    cfg = TrainConfig(steps=150, batch_size=16, lr=3e-3, warmup_steps=5, log_every=0)
    res = train_av(model, tok, meta, (vectors, texts), (vectors[:16], texts[:16]), cfg, log=None)
    assert res.last_loss < res.first_loss * 0.5
