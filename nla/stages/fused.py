"""FusedStage: extract -> explain -> score in one actor (one call per batch of documents), or explain -> score (one
call per batch of stored activations: `nla label --from-activations`, extract=None).

For machines where the stages would fight over the same cores (a laptop, the toy kit) or where all three models fit
one GPU: no hand-offs between actors, no oversubscribed threads, and `concurrency` copies scale data-parallel.
Same rows out as the three stages chained (each stage still stamps its own t_* seconds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nla.stages import set_threads
from nla.stages.explain import ExplainStage
from nla.stages.extract import ExtractStage
from nla.stages.score import ScoreStage


class FusedStage:
    def __init__(self, *, extract: dict[str, Any] | None, explain: dict[str, Any], score: dict[str, Any] | None,
                 threads: int = 0) -> None:
        set_threads(threads)
        self.stages = [ExtractStage(**extract)] if extract is not None else []
        self.stages.append(ExplainStage(**explain))
        if score is not None:
            self.stages.append(ScoreStage(**score))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for stage in self.stages:
            batch = stage(batch)
        return batch
