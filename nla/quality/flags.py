"""The flags one explanation row gets from its own text and status, at commit time: `degenerate` (a repetition
loop, text mostly in an unexpected script, an empty body), `truncated` and `no_tags` (from the AV's status).

`template` and `low_norm` need the whole lake (the other vectors a text explains, the layer's norm distribution):
lakepass.py sets them. This module holds the flag names, their order, and the one definition of "the same text"
(TEMPLATE_KEY_SQL) that lakepass.py groups by. It does not read or write tables.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from nla.quality.settings import QualitySettings

TEMPLATE, DEGENERATE, LOW_NORM, TRUNCATED, NO_TAGS = "template", "degenerate", "low_norm", "truncated", "no_tags"
FLAGS = (TEMPLATE, DEGENERATE, LOW_NORM, TRUNCATED, NO_TAGS)  # the order flags are stored in
LAKE_FLAGS = (TEMPLATE, LOW_NORM)  # set by lakepass.py, after the rows are committed
STATUS_FLAGS = {"truncated": TRUNCATED, "no_tags": NO_TAGS}  # the AV's status -> its flag ("error" is no quality flag)

# "The same or near-same text": lower case, every run of non-letters (digits, punctuation, spaces) as one space.
# DuckDB SQL over the column `explanation`; the only definition (lakepass.py groups and matches by it).
TEMPLATE_KEY_SQL = r"trim(regexp_replace(lower(explanation), '[^\pL]+', ' ', 'g'))"


def ordered(flags: set[str] | Sequence[str]) -> list[str]:
    """Flags in the stored order (FLAGS), each once."""
    return [f for f in FLAGS if f in set(flags)]


def row_flags(explanation: str | None, raw_output: str | None, status: str,
              settings: QualitySettings | None = None) -> list[str]:
    """The flags a row gets from itself. A truncated or untagged output is also judged for degeneracy (a loop that
    ran until the token cap is the usual cause), on its raw text."""
    s = settings or QualitySettings()
    out = {STATUS_FLAGS[status]} if status in STATUS_FLAGS else set()
    if status == "ok":
        if degenerate_reason(explanation or "", s, body=True):
            out.add(DEGENERATE)
    elif status in STATUS_FLAGS and degenerate_reason(raw_output or "", s, body=False):
        out.add(DEGENERATE)
    return ordered(out)


def degenerate_reason(text: str, settings: QualitySettings, *, body: bool) -> str:
    """Why `text` is degenerate ('' when it is not): an empty body (only for an explanation body: no letter or
    digit), a repetition loop, or letters mostly outside the expected scripts."""
    if body and not any(ch.isalnum() for ch in text):
        return "empty explanation body"
    if len(text) >= settings.loop_min_chars and distinct_share(text) < settings.loop_distinct:
        return f"repetition loop ({distinct_share(text):.2f} of its 5-character pieces are distinct)"
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) >= 3:
        foreign = sum(1 for ch in letters if script(ch) not in settings.scripts)
        if foreign * 2 > len(letters):
            return f"{foreign} of {len(letters)} letters outside the expected scripts {settings.scripts}"
    return ""


def distinct_share(text: str, n: int = 5) -> float:
    """Distinct n-character pieces / all n-character pieces of the whitespace-collapsed text: near 1 for running
    prose, near 0 for a loop ("the the the ...")."""
    t = " ".join(text.split())
    pieces = [t[i:i + n] for i in range(max(0, len(t) - n + 1))]
    return len(set(pieces)) / len(pieces) if pieces else 1.0


def script(ch: str) -> str:
    """The script of a letter as the first word of its Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ...)."""
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"
