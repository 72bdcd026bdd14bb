"""The fast path (nla.fast) computes what the plain path computes: greedy tokens equal, vectors equal in fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nla.ar import ARModel
from nla.av import AVPrompter, HFBackend, SamplingParams
from nla.checkpoint import pair_metas
from nla.errors import NLAInputError
from nla.extract import Extractor
from nla.extract_config import ExtractConfig
from nla.fast.attention import cascade_attention
from nla.fast.decode import FastBackend, repeat_groups, shared_prefix_length
from nla.fast.sampling import sample_key
from nla.fast.prefill import FastAR, FastExtractor, Ragged, length_batches
from nla.toy.tokenizer import vocab_size_of
from tests.conftest import SHORT_AV, tiny_config
from tests.groups import need_module


@pytest.fixture(scope="module")
def qwen(tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config("qwen2", vocab_size_of(tokenizer), layers=3, hidden=64)
    cfg.initializer_range = 0.1  # decisive logits: greedy picks are far from ties
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture(scope="module")
def prompter(qwen, tokenizer):
    av_meta, _ = pair_metas(tokenizer, d_model=64, layer=1, injection_scale=8.0, base_checkpoint="tiny",
                            av_template=SHORT_AV)
    return AVPrompter(qwen.get_input_embeddings(), tokenizer, av_meta)


def test_greedy_tokens_equal_the_plain_path(qwen, tokenizer, prompter):
    params = SamplingParams(temperature=0, max_new_tokens=40)
    fast = FastBackend(qwen, tokenizer, {tokenizer.eos_token_id}, bucket=16)
    for seed in (1, 2):  # the second call reuses the cached prefix with other vectors
        embeds = prompter.prompt_embeds(torch.randn(6, 64, generator=torch.Generator().manual_seed(seed)))
        assert shared_prefix_length(torch.stack(embeds)) == prompter.canonical_ids.index(
            prompter.meta.tokens.injection_token_id)
        plain = HFBackend(qwen, tokenizer, {tokenizer.eos_token_id}).generate(embeds, params)
        assert fast.generate(embeds, params) == plain
        assert len({tuple(t) for t, _ in plain}) > 1  # the vectors steer the output


def test_eos_cuts_rows_as_the_plain_path_does(qwen, tokenizer, prompter):
    params = SamplingParams(temperature=0, max_new_tokens=24)
    embeds = prompter.prompt_embeds(torch.randn(5, 64, generator=torch.Generator().manual_seed(3)))
    first = HFBackend(qwen, tokenizer, {tokenizer.eos_token_id}).generate(embeds, params)
    row = first[0][0]
    cut = next(i for i in range(3, len(row)) if row[i] not in row[:i])
    eos = {tokenizer.eos_token_id, row[cut]}  # a token row 0 first emits mid-way now ends it
    plain = HFBackend(qwen, tokenizer, eos).generate(embeds, params)
    assert len(plain[0][0]) == cut and not plain[0][1]
    assert FastBackend(qwen, tokenizer, eos, bucket=8).generate(embeds, params) == plain


def test_top_k_one_sampling_is_greedy(qwen, tokenizer, prompter):
    embeds = prompter.prompt_embeds(torch.randn(4, 64, generator=torch.Generator().manual_seed(4)))
    fast = FastBackend(qwen, tokenizer, {tokenizer.eos_token_id})
    greedy = fast.generate(embeds, SamplingParams(temperature=0, max_new_tokens=12))
    assert fast.generate(embeds, SamplingParams(temperature=2.0, top_k=1, max_new_tokens=12, seed=5)) == greedy


def test_a_rows_samples_do_not_depend_on_its_batch(qwen, tokenizer, prompter):
    """Same (seed, key, vector) -> same sample, whatever the batch: its size, its order, its neighbours, and whether
    the vector's samples share one prefill (consecutive repeats) or not."""
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=7)
    fast = FastBackend(qwen, tokenizer, {tokenizer.eos_token_id}, bucket=8)
    embeds = prompter.prompt_embeds(torch.randn(3, 64, generator=torch.Generator().manual_seed(5)))
    rows = [embeds[0], embeds[0], embeds[0], embeds[1], embeds[2]]  # three samples of vector 0
    keys = [sample_key("a", 0), sample_key("a", 1), sample_key("a", 2), sample_key("b", 0), sample_key("c", 0)]
    full = fast.generate(rows, params, keys)
    assert full == fast.generate(rows, params, keys)  # repeatable
    assert len({tuple(t) for t, _ in full[:3]}) > 1  # the samples of one vector differ
    alone = [fast.generate([rows[i]], params, [keys[i]])[0] for i in (4, 1)]
    assert alone == [full[4], full[1]]
    mixed = fast.generate([rows[4], rows[2], rows[3], rows[0]], params, [keys[4], keys[2], keys[3], keys[0]])
    assert mixed == [full[4], full[2], full[3], full[0]]
    other_seed = fast.generate(rows, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=8), keys)
    assert other_seed != full


def test_cascade_attention_is_plain_attention():
    g = torch.Generator().manual_seed(0)
    B, Tq, Hq, Hkv, D, Lp, Lr = 3, 4, 6, 2, 8, 5, 7
    q = torch.randn(B, Tq, Hq, D, generator=g)
    k, v = torch.randn(2, B, Hkv, Lp + Lr, D, generator=g)
    k[:, :, :Lp], v[:, :, :Lp] = k[:1, :, :Lp], v[:1, :, :Lp]  # the prefix is the same in every row
    mask = torch.rand(Tq, Lr, generator=g) > 0.3
    full = torch.cat([torch.ones(Tq, Lp, dtype=torch.bool), mask], 1)
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=full, scale=0.3,
                                                           enable_gqa=True)  # (B, Hq, Tq, D)
    out = cascade_attention(q, k[0, :, :Lp], v[0, :, :Lp], k[:, :, Lp:], v[:, :, Lp:], mask, 0.3)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(B, Tq, Hq * D))


KERNEL_CHECK = """
import os, torch
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # Triton's CPU interpreter
from nla.fast.attention import cascade_attention, decode_attention
dev = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator().manual_seed(0)
# (rows, query heads, key heads): Qwen2-like 7 per key head, Gemma-3-like 2; rows per program 1 (the default), and
# 2 or 4, so groups end past the last row
for B, Hq, Hkv, configs in ((3, 14, 2, (None, {"ROWS": 2, "BLOCK": 32})), (5, 4, 2, ({"ROWS": 4, "BLOCK": 32},))):
    for Lp, t in ((5, 0), (0, 70), (70, 100)):
        q = torch.randn(B, 1, Hq, 64, generator=g)
        sk, sv = torch.randn(2, Hkv, Lp, 64, generator=g)
        rk, rv = torch.randn(2, B + 2, Hkv, 150, 64, generator=g)[:, :B]
        ref = cascade_attention(q, sk, sv, rk[:, :, :t + 1], rv[:, :, :t + 1], torch.ones(1, t + 1, dtype=bool), .1)
        for config in configs:
            out = decode_attention(*(x.to(dev) for x in (q, sk, sv, rk, rv, torch.tensor([t]))), .1, config=config)
            torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-5)
"""


def test_decode_kernel_is_cascade_attention():
    need_module("triton", "`python3 dev.py test` runs this test in .venv-vllm, which has Triton (run by its CPU "
                "interpreter here), as GPU machines do")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", KERNEL_CHECK], check=True, timeout=600)


def test_fast_extractor_matches_the_extractor(qwen, tokenizer):
    from nla.toy.corpus import generate_corpus

    from tests.nla.test_extract import long_documents

    texts = [d.text * 3 for d in generate_corpus(7, 11)] + long_documents()  # long ones: tokenized from a prefix
    cfg = ExtractConfig(layer=1, positions_per_doc=4, min_position=5, max_length=120)
    plain = Extractor(qwen, tokenizer, cfg)(texts)
    fast = FastExtractor(qwen, tokenizer, cfg, max_tokens=256)(texts)  # several length buckets
    for key in ("doc_id", "position", "token_id", "token", "context"):
        assert fast[key].tolist() == plain[key].tolist(), key
    np.testing.assert_allclose(fast["vector"], plain["vector"], rtol=1e-4, atol=1e-5)


def test_fast_ar_matches_the_ar_model(make_base, tokenizer):
    ar = ARModel.from_base(make_base("qwen2"), 1)
    torch.nn.init.normal_(ar.value_head.weight, std=0.2)
    texts = ["alpha beta", "a much longer explanation with many more words in it", "gamma"]
    enc = ar.encode(tokenizer, "Summary: <text>{explanation}</text>", texts)
    with torch.inference_mode():
        plain = ar(enc["input_ids"], enc["attention_mask"])
    ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    torch.testing.assert_close(FastAR(ar, max_tokens=16).reconstruct_ids(ids), plain, rtol=1e-4, atol=1e-5)


def test_length_batches_cover_every_row_once_within_the_budget():
    lengths = np.array([5, 100, 17, 64, 3, 99, 1])
    batches = length_batches(lengths, max_tokens=200, max_rows=3)
    assert sorted(np.concatenate([m for m, _ in batches]).tolist()) == list(range(7))
    assert all(len(m) * w <= 200 and lengths[m].max() <= w for m, w in batches)
    seqs = Ragged.from_lists([[1, 2, 3], [4], [5, 6]])
    assert seqs.padded(np.array([2, 0]), 4, 0).tolist() == [[5, 6, 0, 0], [1, 2, 3, 0]]


@pytest.fixture(scope="module")
def gemma(tokenizer):
    """A tiny Gemma-3: sliding and global layers (window 16, so long documents cross it), q/k norms, (1 + w) norms,
    GELU-tanh, sqrt(d) embedding scale, local and global rotary tables, random norm weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config("gemma3", vocab_size_of(tokenizer), layers=4, hidden=64)
    cfg.sliding_window, cfg.layer_types = 16, ["sliding_attention", "full_attention"] * 2
    cfg.initializer_range = 0.1
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


def test_gemma_greedy_tokens_equal_the_plain_path(gemma, tokenizer):
    av_meta, _ = pair_metas(tokenizer, d_model=64, layer=1, injection_scale=8.0, base_checkpoint="tiny",
                            av_template=SHORT_AV)
    prompter = AVPrompter(gemma.get_input_embeddings(), tokenizer, av_meta)
    embeds = prompter.prompt_embeds(torch.randn(5, 64, generator=torch.Generator().manual_seed(6)))
    fast = FastBackend(gemma, tokenizer, {tokenizer.eos_token_id})
    plain = HFBackend(gemma, tokenizer, {tokenizer.eos_token_id})
    gemma.config.sliding_window = 4096  # decoding inside one window: our path runs
    fast.blocks.window = [None if w is None else 4096 for w in fast.blocks.window]
    fallback, fast.fallback = fast.fallback, None  # proves our path ran
    try:
        params = SamplingParams(temperature=0, max_new_tokens=30)
        expected = plain.generate(embeds, params)
        assert fast.generate(embeds, params) == expected
        assert len({tuple(t) for t, _ in expected}) > 1
    finally:
        fast.fallback = fallback
        gemma.config.sliding_window = 16
        fast.blocks.window = [None if w is None else 16 for w in fast.blocks.window]
    params = SamplingParams(temperature=0, max_new_tokens=8)  # the prompt alone passes the window: the plain path
    assert fast.generate(embeds, params) == plain.generate(embeds, params)


def test_gemma_fast_extractor_and_ar_match_the_plain_path(gemma, tokenizer):
    from nla.toy.corpus import generate_corpus

    texts = [d.text * 2 for d in generate_corpus(5, 12)]  # longer than the window of 16
    cfg = ExtractConfig(layer=2, positions_per_doc=4, min_position=5, max_length=80)
    plain = Extractor(gemma, tokenizer, cfg)(texts)
    fast = FastExtractor(gemma, tokenizer, cfg, max_tokens=256)(texts)
    assert fast["position"].tolist() == plain["position"].tolist()
    np.testing.assert_allclose(fast["vector"], plain["vector"], rtol=0, atol=2e-5)
    ar = ARModel(_truncated(gemma, 2))
    torch.nn.init.normal_(ar.value_head.weight, std=0.2)
    texts = ["alpha beta", "a much longer explanation with many more words in it, longer than the window", "g"]
    enc = ar.encode(tokenizer, "Summary: <text>{explanation}</text>", texts)
    with torch.inference_mode():
        expected = ar(enc["input_ids"], enc["attention_mask"])
    ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    torch.testing.assert_close(FastAR(ar, max_tokens=64).reconstruct_ids(ids), expected, rtol=0, atol=2e-5)


def _truncated(model, layers: int):
    """A copy of `model` cut to its first `layers` blocks (what an AR's backbone is)."""
    import copy

    cut = copy.deepcopy(model)
    cut.model.layers = cut.model.layers[:layers]
    cut.config.num_hidden_layers = layers
    cut.config.layer_types = cut.config.layer_types[:layers]
    return cut


def test_unsupported_architectures_are_refused_with_the_fallback_named(tokenizer):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config("gemma3", vocab_size_of(tokenizer))
    cfg.attn_logit_softcapping = 50.0  # Gemma-2-style capping: not on the fast path
    with pytest.raises(NLAInputError, match="plain path"):
        FastBackend(AutoModelForCausalLM.from_config(cfg), None, {1})


def test_repeat_groups_find_runs_of_equal_rows():
    rows = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2], [1, 2], [1, 2]])  # (B, ...)
    first, group = repeat_groups(rows)
    assert first.tolist() == [0, 2, 3] and group.tolist() == [0, 0, 1, 2, 2, 2]
