"""nla/chat.py on the toy tokenizer (byte-level BPE with a chat template and BOS): one BOS, spans, glyph runs."""

from __future__ import annotations

import pytest

from nla.chat import chat_spans, encode, render_chat, token_pieces
from nla.errors import NLAInputError

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the storm"},
        {"role": "assistant", "content": "oslo"}]


def test_encode_adds_bos_once(tokenizer):
    text = render_chat(tokenizer, CHAT)
    ids = encode(tokenizer, text)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert encode(tokenizer, "the storm")[0] == tokenizer.bos_token_id
    assert len(encode(tokenizer, "the storm " * 50, max_length=8)) == 8


@pytest.mark.parametrize("continue_final", [False, True])
def test_spans_name_each_message_and_section(tokenizer, continue_final):
    text = render_chat(tokenizer, CHAT, continue_final_message=continue_final)
    ids = encode(tokenizer, text)
    spans = chat_spans(tokenizer, CHAT, text, ids, continue_final_message=continue_final)
    assert len(spans) == len(ids) and spans[0]["section"] == "scaffold"  # BOS
    for i, m in enumerate(CHAT):
        content = [k for k, s in enumerate(spans) if s["message_index"] == i and s["section"] == "content"]
        assert tokenizer.decode([ids[k] for k in content]) == m["content"]
        assert {s["role"] for s in spans if s["message_index"] == i} == {m["role"]}
        assert spans[min(k for k, s in enumerate(spans) if s["message_index"] == i)]["section"] == "header"
    tail = spans[-1]
    assert (tail["message_index"], tail["section"]) == ((2, "content") if continue_final else (None, "scaffold"))


def test_glyph_runs_and_refusals(tokenizer):
    ids = encode(tokenizer, "storm 世界")
    pieces = token_pieces(tokenizer, ids)
    runs = [p for p in pieces if p[2] > 1]
    assert [p[0] for p in runs] == ["世"] * runs[0][2] + ["界"] * runs[-1][2]
    assert [p[1] for p in runs[:runs[0][2]]] == list(range(runs[0][2]))
    with pytest.raises(NLAInputError, match="role"):
        render_chat(tokenizer, [{"content": "x"}])
