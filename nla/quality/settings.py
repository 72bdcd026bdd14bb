"""QualitySettings: the thresholds of the quality flags (the `quality.*` keys of `nla label`). Defaults were chosen
from data on the toy kit; docs/quality.md gives the figures and how to pick others for a real pair."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QualitySettings:
    template_min_vectors: int = 8  # template: a text (case, digits and punctuation ignored) must explain at least
    # this many distinct activations before its spread is judged
    template_spread: float = 0.8  # template: flagged when the spread of the vectors one text explains is at least
    # this share of what as many random activations of the run would have (1 = as unrelated as random; 0 = identical)
    low_norm_percentile: float = 1.0  # low_norm: an input below this percentile of its (layer, source) norms
    low_norm_min_rows: int = 100  # low_norm: judged only where the (layer, source) has at least this many vectors
    scripts: list[str] = field(default_factory=lambda: ["LATIN"])  # degenerate: the scripts explanations are
    # expected in (Unicode script names as in character names: LATIN, CYRILLIC, GREEK, CJK, HANGUL, ARABIC, ...)
    loop_min_chars: int = 40  # degenerate: texts shorter than this are never judged a repetition loop
    loop_distinct: float = 0.5  # degenerate: a repetition loop has fewer distinct 5-character pieces than this
    # share of its 5-character pieces (running English is above 0.8)
    warn_share: float = 0.2  # the job warns when more than this share of a run's explanations is flagged
