"""Text and chat messages -> the base model's token ids, with what each token is: its display text and its chat span.

`encode` is the one tokenization every text endpoint uses (BOS added unless the text already opens with it, as a
rendered chat template does). `render_chat` applies the tokenizer's own chat template; `chat_spans` tags each token
of the rendered text with its message (role, channel, index) and section (header | content | footer | scaffold).
`token_pieces` names each token for display, merging byte fragments of one glyph (CJK, emoji) into runs. It knows
nothing of models, vectors or HTTP.
"""

from __future__ import annotations

from typing import Any

from nla.errors import NLAInputError

REPLACEMENT = "\ufffd"
FRAGMENT_LOOKAHEAD = 4  # a UTF-8 glyph spans at most 4 bytes, so at most 4 byte-level tokens


def encode(tokenizer: Any, text: str, *, max_length: int | None = None) -> list[int]:
    """Token ids of `text`: the tokenizer's special prefix (BOS) unless the text already starts with it, so a
    rendered chat template (which writes its own BOS) is not given a second one. Cut to max_length."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add, truncation=max_length is not None,
                     max_length=max_length)["input_ids"]


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                continue_final_message: bool = False, enable_thinking: bool | None = None) -> str:
    """The messages rendered by the tokenizer's chat template. continue_final_message leaves the last message open
    (and so takes precedence over add_generation_prompt, which it cannot be combined with)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise NLAInputError("messages: the base model's tokenizer has no chat template. Fix: send `text` (the "
                            "conversation already rendered) instead of `messages`.")
    for i, m in enumerate(messages):
        if not isinstance(m.get("role"), str) or not m["role"]:
            raise NLAInputError(f"messages[{i}].role is missing. Fix: give each message a role, e.g. \"user\".")
    extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=continue_final_message,
                                             add_generation_prompt=add_generation_prompt and not continue_final_message,
                                             **extra)
    except Exception as e:  # jinja's errors (raise_exception in templates, undefined keys) have no common base
        raise NLAInputError(f"messages: the chat template refused them ({type(e).__name__}: {str(e)[:200]}). Fix: "
                            "check the roles and their order for this model.") from e


def _prefix_end(tokenizer: Any, messages: list[dict[str, Any]], text: str, **opts: Any) -> int | None:
    """Where the render of `messages` (a prefix of the conversation) ends inside `text`, or None if it is no
    prefix of it (templates that render early turns differently once later ones exist)."""
    try:
        part = render_chat(tokenizer, messages, add_generation_prompt=False, **opts) if messages else None
    except NLAInputError:
        return None
    if part is None:
        bos = getattr(tokenizer, "bos_token", None)
        return len(bos) if bos and text.startswith(bos) else 0
    return len(part) if text.startswith(part) else None


def chat_spans(tokenizer: Any, messages: list[dict[str, Any]], text: str, ids: list[int], *,
               continue_final_message: bool = False, enable_thinking: bool | None = None) -> list[dict[str, Any]]:
    """One span per token of `ids` (= encode(text)): role, channel and message_index of the message the token
    belongs to, and its section: 'header' (the template's turn opening), 'content' (the message's own text),
    'footer' (the turn's closing) or 'scaffold' (template text outside any message: BOS, the generation prompt)."""
    opts = {"enable_thinking": enable_thinking}
    ends = [_prefix_end(tokenizer, messages[:i], text, **opts) for i in range(len(messages))]
    last = _prefix_end(tokenizer, messages, text, continue_final_message=continue_final_message, **opts)
    ends.append(last if last is not None else len(text))
    regions = []  # per message: (start, content start, content end, end) in characters of `text`
    cursor = ends[0] or 0
    for i, m in enumerate(messages):
        start = ends[i] if ends[i] is not None else cursor
        end = ends[i + 1] if ends[i + 1] is not None else len(text)
        content = str(m.get("content") or "")
        at = text.find(content, start, end) if content else -1
        c0, c1 = (at, at + len(content)) if at >= 0 else (end, end)
        regions.append((start, c0, c1, end))
        cursor = end
    bos = getattr(tokenizer, "bos_token", None)
    offsets = tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)),
                        return_offsets_mapping=True)["offset_mapping"][:len(ids)]
    spans = []
    for k, (a, b) in enumerate(offsets):
        where = next((i for i, (s, _, _, e) in enumerate(regions) if s <= a < e and b > a), None)
        if where is None:
            spans.append({"role": None, "section": "scaffold", "channel": None, "message_index": None})
            continue
        _, c0, c1, _ = regions[where]
        section = "header" if a < c0 else "content" if a < c1 else "footer"
        m = messages[where]
        spans.append({"role": m["role"], "section": section, "channel": m.get("channel"), "message_index": where})
    spans += [{"role": None, "section": "scaffold", "channel": None, "message_index": None}] * (len(ids) - len(spans))
    return spans


def token_pieces(tokenizer: Any, ids: list[int]) -> list[tuple[str, int, int]]:
    """(display text, fragment_index, fragment_count) per id. A run of ids that each decode to U+FFFD but together
    to a clean glyph gets the glyph on every id of the run, with its index in the run; others are (text, 0, 1)."""
    out: list[tuple[str, int, int]] = []
    i = 0
    while i < len(ids):
        single = tokenizer.decode([ids[i]])
        end = i + 1
        joined = single
        while REPLACEMENT in joined and end < len(ids) and end - i < FRAGMENT_LOOKAHEAD:
            end += 1
            joined = tokenizer.decode(ids[i:end])
        if REPLACEMENT not in single or REPLACEMENT in joined:
            out.append((single, 0, 1))
            i += 1
            continue
        out += [(joined, k, end - i) for k in range(end - i)]
        i = end
    return out
