"""Injection equals a hand-made replacement; Gemma's embedding scale applies to tokens, never to the vector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nla import hf
from nla import prompt as P
from nla.av import AVPrompter
from nla.checkpoint import pair_metas
from nla.errors import NLAInputError
from nla.injection import as_vectors, inject
from tests.conftest import SHORT_AV


def _prompter(folder, tokenizer, scale=7.0):
    model = hf.load_causal_lm(folder)
    d = model.config.hidden_size
    av_meta, _ = pair_metas(tokenizer, d_model=d, layer=1, injection_scale=scale, base_checkpoint=str(folder),
                            av_template=SHORT_AV)
    return model, AVPrompter(model.get_input_embeddings(), tokenizer, av_meta)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_prompt_embeds_equal_hand_made(family, make_base, tokenizer):
    model, prompter = _prompter(make_base(family), tokenizer)
    d = model.config.hidden_size
    v = torch.randn(2, d) * 3
    embeds = prompter.prompt_embeds(v)
    ids = P.render_chat_ids(tokenizer, SHORT_AV.format(injection_char="㈎"))
    assert ids.count(tokenizer.bos_token_id) == 1  # the template's BOS, once
    pos = ids.index(prompter.meta.tokens.injection_token_id)
    table = model.get_input_embeddings().weight.detach()
    scale = math.sqrt(d) if family == "gemma3" else 1.0  # Gemma multiplies looked-up embeddings by sqrt(d)
    for i in range(2):
        expected = table[torch.tensor(ids)] * torch.tensor(scale, dtype=table.dtype)
        expected[pos] = v[i] * 7.0 / v[i].norm()
        assert embeds[i].shape == (len(ids), d)
        torch.testing.assert_close(embeds[i], expected, rtol=1e-5, atol=1e-5)
        assert embeds[i][pos].norm().item() == pytest.approx(7.0, rel=1e-5)


def test_inject_checks_neighbours_and_count():
    ids = torch.tensor([[5, 9, 6, 9, 4]])  # marker 9: first site has neighbours (5, 6), second (6, 4)
    embeds = torch.zeros(1, 5, 3)
    v = torch.tensor([[3.0, 4.0, 0.0]])
    out = inject(ids, embeds, v, token_id=9, left_id=5, right_id=6, injection_scale=10.0)
    torch.testing.assert_close(out[0, 1], torch.tensor([6.0, 8.0, 0.0]))
    assert out[0, 3].abs().sum() == 0  # wrong neighbours: left alone
    with pytest.raises(NLAInputError, match="found 1 marker sites"):
        inject(ids, embeds, torch.ones(2, 3), token_id=9, left_id=5, right_id=6, injection_scale=1.0)


def test_norm_is_fp32_for_bf16_vectors():
    ids = torch.tensor([[5, 9, 6]])
    v = torch.full((1, 4096), 300.0, dtype=torch.bfloat16)
    out = inject(ids, torch.zeros(1, 3, 4096, dtype=torch.bfloat16), v, token_id=9, left_id=5, right_id=6,
                 injection_scale=150.0)
    assert out[0, 1].float().norm().item() == pytest.approx(150.0, rel=1e-2)


@pytest.mark.parametrize("bad, match", [
    (np.ones(31), "d_model=32"),
    (np.full(32, np.nan), "NaN or inf"),
    (np.concatenate([np.ones(31), [np.inf]]), "NaN or inf"),
    (np.zeros(32), "all zeros"),
    (np.ones((0, 32)), "no vectors"),
    ("not a vector", "cannot read"),
])
def test_bad_vectors(bad, match):
    with pytest.raises(NLAInputError, match=match):
        as_vectors(bad, 32)


def test_custom_prompt_needs_placeholder(make_base, tokenizer):
    _, prompter = _prompter(make_base("llama"), tokenizer)
    with pytest.raises(NLAInputError, match="<INJECT>"):
        prompter.prompt_embeds(np.ones(32), prompt="What is this?")
    custom = prompter.prompt_embeds(np.ones(32), prompt="the <concept><INJECT></concept> ?")
    assert custom[0].shape[0] != prompter.prompt_embeds(np.ones(32))[0].shape[0]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_embedding_table_alone_equals_the_models_layer(family, make_base):
    from nla.embeddings import load_input_embeddings

    folder = make_base(family)
    model = hf.load_causal_lm(folder)
    ids = torch.tensor([[0, 5, 9, 33, 100]])
    torch.testing.assert_close(load_input_embeddings(folder)(ids), model.get_input_embeddings()(ids))
