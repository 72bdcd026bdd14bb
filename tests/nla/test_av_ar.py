"""AV generation and parsing; AR-init reconstruction; scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nla import NLAClient, NLACritic
from nla import hf
from nla import prompt as P
from nla.av import SamplingParams, parse_explanation
from nla.errors import NLAInputError
from nla.metrics import cosine, fve_nrm, mean_baseline, mse_nrm


def test_parse_statuses():
    assert parse_explanation("<explanation>\n a b \n</explanation>", hit_limit=False) == ("a b", "ok")
    assert parse_explanation("pre <explanation>x</explanation> post", hit_limit=True) == ("x", "ok")
    assert parse_explanation("<explanation> unfinished", hit_limit=True) == (None, "truncated")
    assert parse_explanation("no tags at all", hit_limit=False) == (None, "no_tags")
    assert parse_explanation("<explanation>  </explanation>", hit_limit=False) == (None, "no_tags")


def test_greedy_equals_hand_rolled_loop(pair):
    client = NLAClient(pair[0])
    v = torch.randn(3, client.meta.d_model)
    gens = client.explain(v, temperature=0, max_new_tokens=12)
    embeds = client.prompt_embeds(v)
    for g, e in zip(gens, embeds):
        x, out = e[None], []
        with torch.no_grad():
            for _ in range(12):
                nxt = int(client.model(inputs_embeds=x).logits[0, -1].argmax())
                if nxt in client.backend.eos_ids:
                    break
                out.append(nxt)
                x = torch.cat([x, client.model.get_input_embeddings()(torch.tensor([[nxt]]))], dim=1)
        assert g.raw_output == client.tokenizer.decode(out, skip_special_tokens=True)
        assert g.n_tokens == len(out) and g.status in ("no_tags", "truncated")  # an init AV has not learned tags


def test_seeded_sampling_is_reproducible(pair):
    client = NLAClient(pair[0])
    v = torch.randn(4, client.meta.d_model)
    a = client.generate_batch(v, temperature=1.0, max_new_tokens=10, seed=3)
    b = client.generate_batch(v, temperature=1.0, max_new_tokens=10, seed=3)
    c = client.generate_batch(v, temperature=1.0, max_new_tokens=10, seed=4)
    assert a == b and a != c
    with pytest.raises(TypeError, match="unknown sampling"):
        client.generate(v[0], temprature=0.5)


def test_ar_init_reconstructs_block_k_state(pair, make_base, tokenizer):
    critic = NLACritic(pair[1])
    base = hf.load_causal_lm(make_base("llama"))
    texts = ["The text is about weather.", "It mentions alice and paris.\n\nIt ends with \"the goal\"."]
    recon = critic.reconstruct_batch(texts)  # right padding inside one batch
    for text, r in zip(texts, recon):
        ids = tokenizer(P.ar_text(critic.meta.ar_template, text), return_tensors="pt")["input_ids"]
        assert ids[0, 0] == tokenizer.bos_token_id  # tokenised WITH special tokens
        with torch.no_grad():
            h = base(ids, output_hidden_states=True).hidden_states[critic.meta.layer + 1][0, -1]
        torch.testing.assert_close(r, h, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(critic.reconstruct(text), h, rtol=1e-4, atol=1e-4)
    critic.tokenizer.padding_side = "left"
    try:
        torch.testing.assert_close(critic.reconstruct_batch(texts), recon, rtol=1e-4, atol=1e-4)
    finally:
        critic.tokenizer.padding_side = "right"


def test_scores(pair):
    critic = NLACritic(pair[1])
    v = torch.randn(5, critic.meta.d_model)
    mse, cos = critic.score_batch(["a storm in oslo"] * 5, v)
    torch.testing.assert_close(mse, 2 * (1 - cos), rtol=1e-4, atol=1e-5)
    m1, c1 = critic.score("a storm in oslo", v[0].numpy())
    assert m1 == pytest.approx(float(mse[0]), rel=1e-5) and c1 == pytest.approx(float(cos[0]), rel=1e-5)
    with pytest.raises(NLAInputError, match="empty"):
        critic.score("   ", v[0])
    with pytest.raises(NLAInputError, match="d_model"):
        critic.score("a storm", np.ones(7))


def test_metric_definitions():
    d = 16
    v = torch.randn(200, d)
    r = v + 0.1 * torch.randn(200, d)
    mse = mse_nrm(r, v, math.sqrt(d))
    torch.testing.assert_close(mse, 2 * (1 - cosine(r, v)), rtol=1e-4, atol=1e-5)
    base = mean_baseline(v, math.sqrt(d))
    mean_pred = v.mean(0, keepdim=True).expand_as(v)
    vn = v / v.norm(dim=1, keepdim=True) * math.sqrt(d)
    assert base == pytest.approx(((vn - vn.mean(0)) ** 2).mean().item(), rel=1e-5)
    assert fve_nrm(mse, v, math.sqrt(d)) > 0.9
    assert fve_nrm(mse_nrm(v[torch.randperm(200)], v, math.sqrt(d)), v, math.sqrt(d)) < 0
    assert mean_pred.shape == v.shape


def test_sampling_params():
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy
    assert SamplingParams().max_new_tokens == 200
