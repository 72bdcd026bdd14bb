"""Prompt rendering and marker selection: the token-level contract between a sidecar and a live tokenizer.

Renders the AV's canonical prompt (one user message through the chat template, generation prompt on, one BOS),
the AR's input string, and finds the injection marker for a tokenizer that has none yet. It does not touch models,
embeddings or vectors (see injection.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from nla.errors import NLAInputError

INJECT_PLACEHOLDER = "<INJECT>"
EXPLANATION_OPEN = "<explanation>"
EXPLANATION_CLOSE = "</explanation>"

# The release's AV prompt (Qwen/Gemma/Llama checkpoints). `nla init` writes it into new sidecars; loaders always read
# the template from the sidecar, never from here.
DEFAULT_AV_TEMPLATE = (
    "You are a meticulous AI researcher conducting an important investigation into activation vectors from a "
    "language model. Your overall task is to describe the semantic content of that activation vector.\n\n"
    "We will pass the vector enclosed in <concept> tags into your context. You must then produce an explanation for "
    "the vector, enclosed within <explanation> tags. The explanation consists of 2-3 text snippets describing that "
    "vector.\n\nHere is the vector:\n\n<concept>{injection_char}</concept>\n\nPlease provide an explanation."
)
DEFAULT_AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"

# Where markers are looked for, in order. The release's rule is the first block; the rest is our documented fallback
# for small vocabularies (SmolLM2 has no single-token character in U+3200..U+33FF): rare symbol blocks first, then
# scripts that small English vocabularies still keep as whole tokens.
MARKER_BLOCKS: tuple[tuple[int, int], ...] = (
    (0x3200, 0x33FF),  # enclosed CJK letters and months, CJK compatibility (the release's block)
    (0x2460, 0x24FF),  # enclosed alphanumerics
    (0x2190, 0x21FF),  # arrows (SmolLM2: '→' stays one token even after a space or repeated)
    (0x2200, 0x22FF),  # mathematical operators
    (0x25A0, 0x25FF),  # geometric shapes
    (0x2600, 0x26FF),  # miscellaneous symbols
    (0x2700, 0x27BF),  # dingbats
    (0x2500, 0x257F),  # box drawing (SmolLM2's '─' merges with neighbours: the in-prompt check rejects such chars)
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
)


def as_id_list(encoded: Any) -> list[int]:
    """Normalise what apply_chat_template/encode return (list, nested list, BatchEncoding, str-free) to list[int]."""
    if hasattr(encoded, "keys"):  # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    encoded = list(encoded)
    if encoded and isinstance(encoded[0], list):
        if len(encoded) != 1:
            raise ValueError(f"expected one sequence, got a batch of {len(encoded)}")
        encoded = encoded[0]
    return [int(t) for t in encoded]


def render_chat_ids(tokenizer: Any, content: str) -> list[int]:
    """Token ids of one user message rendered with the chat template and the generation prompt.

    Tokenised in one step so the template's own BOS (Gemma, Llama) appears exactly once.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise NLAInputError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template: the AV prompt is a chat "
            "message. Fix: use the instruct/chat variant of the base, or set tokenizer.chat_template before saving."
        )
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
    )
    return as_id_list(ids)


def av_content(template: str, injection_char: str, prompt: str | None = None) -> str:
    """The user-message text: the sidecar's template, or a custom prompt whose `<INJECT>` marks the vector."""
    if prompt is None:
        return template.format(injection_char=injection_char)
    if prompt.count(INJECT_PLACEHOLDER) != 1:
        raise NLAInputError(
            f"custom prompt must contain {INJECT_PLACEHOLDER!r} exactly once (found {prompt.count(INJECT_PLACEHOLDER)})"
            f": it marks where the activation goes. Fix: e.g. prompt='What is <concept>{INJECT_PLACEHOLDER}</concept>?'"
        )
    return prompt.replace(INJECT_PLACEHOLDER, injection_char)


def ar_text(template: str, explanation: str) -> str:
    """The AR's input string (no chat template): the explanation stripped and put into the sidecar's template."""
    if not isinstance(explanation, str) or not explanation.strip():
        raise NLAInputError(
            f"explanation {explanation!r} is empty: the AR needs text to reconstruct a vector from. "
            "Fix: pass the AV's explanation (status 'ok' rows), not an empty or failed sample."
        )
    return template.format(explanation=explanation.strip())


def wrap_explanation(text: str) -> str:
    """The AV's SFT target: the explanation inside its tags, one newline either side."""
    return f"{EXPLANATION_OPEN}\n{text}\n{EXPLANATION_CLOSE}"


def marker_positions(ids: Sequence[int], token_id: int) -> list[int]:
    return [i for i, t in enumerate(ids) if t == token_id]


def neighbours(ids: Sequence[int], token_id: int) -> tuple[int, int]:
    """(left, right) ids around the single occurrence of token_id; ValueError if it is not exactly once inside."""
    at = marker_positions(ids, token_id)
    if len(at) != 1:
        raise ValueError(f"marker id {token_id} occurs {len(at)} times in the rendered prompt (expected exactly 1)")
    p = at[0]
    if p == 0 or p == len(ids) - 1:
        raise ValueError(f"marker id {token_id} sits at the edge of the rendered prompt (position {p})")
    return ids[p - 1], ids[p + 1]


def single_token_id(tokenizer: Any, char: str) -> int | None:
    """The id `char` encodes to when it is exactly one non-UNK token (encode, not convert_tokens_to_ids), else None."""
    ids = tokenizer.encode(char, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]


def candidate_chars(blocks: Iterable[tuple[int, int]] = MARKER_BLOCKS) -> Iterable[str]:
    for lo, hi in blocks:
        for cp in range(lo, hi + 1):
            yield chr(cp)


def find_marker(tokenizer: Any, av_template: str) -> tuple[str, int, int, int]:
    """First char of MARKER_BLOCKS that is one non-UNK token alone AND once inside the rendered prompt.

    Returns (char, token_id, left_neighbour_id, right_neighbour_id).
    """
    for char in candidate_chars():
        token_id = single_token_id(tokenizer, char)
        if token_id is None:
            continue
        ids = render_chat_ids(tokenizer, av_template.format(injection_char=char))
        try:
            left, right = neighbours(ids, token_id)
        except ValueError:
            continue  # merged with a neighbour, or the id also occurs elsewhere in the prompt
        return char, token_id, left, right
    raise NLAInputError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no character in the marker blocks that stays one "
        "token inside the AV prompt. Fix: add a dedicated token (tokenizer.add_tokens(['<nla_inject>']) and "
        "model.resize_token_embeddings) and write it into the sidecar as tokens.injection_char."
    )


def critic_suffix_ids(tokenizer: Any, ar_template: str, n: int = 5) -> list[int]:
    """The last n ids every AR input ends with (the template's fixed tail, e.g. '</text> <summary>')."""
    a = as_id_list(tokenizer(ar_text(ar_template, "alpha"), add_special_tokens=True)["input_ids"])
    b = as_id_list(tokenizer(ar_text(ar_template, "beta gamma"), add_special_tokens=True)["input_ids"])
    common = 0
    while common < min(len(a), len(b)) and a[-1 - common] == b[-1 - common]:
        common += 1
    return a[len(a) - min(common, n):]
