"""Extraction reads hidden_states[K+1] while running only blocks 0..K; positions follow the release's rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nla import hf
from nla.errors import NLACheckpointError, NLAInputError
from nla.extract import Extractor
from nla.extract_config import ExtractConfig

TEXTS = ["alice scored a late goal for the team in paris . fans in paris cheered as the match ended .",
         "a heavy storm moved over oslo last night .",
         "the bank in rome fell again today . omar asked the bank about a loan . traders in rome watched the market ."]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_equals_hidden_states_and_stops_after_block_k(family, make_base):
    folder = make_base(family)
    model = hf.load_causal_lm(folder)
    tok = hf.load_tokenizer(folder)
    ext = Extractor(model, tok, ExtractConfig(layer=1, min_position=0, all_positions=True, batch_size=2))
    calls = []
    hooks = [blk.register_forward_hook(lambda *a, i=i: calls.append(i)) for i, blk in enumerate(ext.blocks)]
    try:
        rows = ext(TEXTS, ["a", "b", "c"])
    finally:
        for h in hooks:
            h.remove()
    assert set(calls) == {0, 1}  # block 2 never ran
    with torch.no_grad():
        for doc, text in zip("abc", TEXTS):
            enc = tok(text, return_tensors="pt")
            hs = model(**enc, output_hidden_states=True).hidden_states[2][0]  # hidden_states[K+1]
            sel = rows["doc_id"] == doc
            np.testing.assert_allclose(rows["vector"][sel], hs[rows["position"][sel]].numpy(), rtol=1e-4, atol=1e-5)
            assert rows["vector"].dtype == np.float32
            ids = enc["input_ids"][0].tolist()
            assert 0 not in rows["position"][sel].tolist()  # BOS is special: never a position
            assert rows["token_id"][sel].tolist() == [ids[p] for p in rows["position"][sel]]


def test_loading_from_folder_keeps_only_k_plus_one_blocks(make_base):
    ext = Extractor.from_pretrained(make_base("llama"), ExtractConfig(layer=1, min_position=0, all_positions=True))
    assert len(ext.blocks) == 2
    full = Extractor(hf.load_causal_lm(make_base("llama")), hf.load_tokenizer(make_base("llama")),
                     ExtractConfig(layer=1, min_position=0, all_positions=True))
    np.testing.assert_allclose(ext(TEXTS)["vector"], full(TEXTS)["vector"], rtol=1e-5, atol=1e-6)


def test_position_sampling_is_keyed_by_doc(make_base):
    folder = make_base("llama")
    cfg = ExtractConfig(layer=1, positions_per_doc=3, min_position=5, seed=11)
    ext = Extractor.from_pretrained(folder, cfg)
    a = ext(TEXTS, ["a", "b", "c"])
    b = ext(TEXTS[::-1], ["c", "b", "a"])  # another order / sharding: same rows per doc
    for doc in "abc":
        assert a["position"][a["doc_id"] == doc].tolist() == b["position"][b["doc_id"] == doc].tolist()
    assert (a["position"] >= 5).all()
    assert max(np.bincount(np.unique(a["doc_id"], return_inverse=True)[1])) <= 3
    other_seed = Extractor.from_pretrained(folder, ExtractConfig(layer=1, positions_per_doc=3, min_position=5, seed=12))
    assert other_seed(TEXTS, ["a", "b", "c"])["position"].tolist() != a["position"].tolist()


def test_left_padding_gives_the_same_rows(make_base):
    folder = make_base("llama")
    cfg = ExtractConfig(layer=1, min_position=0, all_positions=True, batch_size=3)
    right = Extractor.from_pretrained(folder, cfg)
    left = Extractor.from_pretrained(folder, cfg)
    left.tokenizer.padding_side = "left"
    try:
        r, l_ = right(TEXTS), left(TEXTS)
    finally:
        left.tokenizer.padding_side = "right"
    assert r["position"].tolist() == l_["position"].tolist()
    np.testing.assert_allclose(r["vector"], l_["vector"], rtol=1e-4, atol=1e-4)


def test_context_and_token_text(make_base):
    ext = Extractor.from_pretrained(make_base("llama"), ExtractConfig(layer=1, min_position=0, all_positions=True))
    rows = ext([TEXTS[1]])
    assert rows["context"][-1] == TEXTS[1] and rows["token"][-1].strip() == "."


def test_bad_layer_and_text(make_base):
    with pytest.raises(NLACheckpointError, match=r"asked for 8 blocks but the model has 3\. Fix: choose a layer K "
                                                 r"with 0 <= K < num_hidden_layers"):
        Extractor.from_pretrained(make_base("llama"), ExtractConfig(layer=7))
    ext = Extractor.from_pretrained(make_base("llama"), ExtractConfig(layer=1))
    with pytest.raises(NLAInputError, match="expected str"):
        ext([b"bytes"], ["x"])


def long_documents() -> list[str]:
    """Documents of 40-200k characters: prose with punctuation, accents and emoji; one long word; runs of spaces."""
    from nla.toy.corpus import generate_corpus

    prose = " ".join(d.text for d in generate_corpus(400, 7))
    mixed = " ".join(f"{w} Zürich, naïve café — 東京 🙂 x{i}!" for i, w in enumerate(prose.split()[:3000]))
    return [prose, mixed, "a" * 60_000 + " end", " " * 80_000 + "word", "\n\n".join([prose[:20_000]] * 5)]


@pytest.mark.parametrize("max_length", [64, 100])
def test_long_documents_tokenize_from_a_prefix_to_the_same_tokens(max_length):
    """A real byte-level BPE (SmolLM2's): the first max_length tokens of the cut document are the whole one's."""
    from nla.bases import smollm2_folder
    from nla.extract import bounded_texts

    tok = hf.load_tokenizer(smollm2_folder())
    docs = long_documents()
    cut = bounded_texts(tok, docs, max_length)
    assert sum(len(c) < len(d) for c, d in zip(cut, docs)) >= 3  # the prose ones were cut
    for c, d in zip(cut, docs):
        whole = tok(d, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
        assert tok(c, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"] == whole
    tok.truncation_side = "left"  # it keeps the last tokens: no prefix would do
    assert bounded_texts(tok, docs, max_length) == docs


def test_long_documents_give_the_rows_of_the_whole_document(make_base, monkeypatch):
    import nla.extract as E

    ext = Extractor.from_pretrained(make_base("llama"), ExtractConfig(layer=1, positions_per_doc=5, min_position=8,
                                                                      max_length=64, batch_size=2))
    docs = long_documents()
    rows = ext(docs, list("abcde"))
    monkeypatch.setattr(E, "CUT_CHARS_PER_TOKEN", 10**9)  # no cut: every document tokenized whole
    whole = ext(docs, list("abcde"))
    for k in ("doc_id", "position", "token_id", "token", "context"):
        assert rows[k].tolist() == whole[k].tolist(), k
    np.testing.assert_array_equal(rows["vector"], whole["vector"])
