"""Batches as the stages and the committer pass them: dicts of equal-length numpy arrays (what Ray Data's numpy
batch format gives), the row statuses they carry, and the helpers both sides use. No torch, no Ray."""

from __future__ import annotations

from typing import Any

import numpy as np

OK = "ok"
ERROR = "error"  # an AV batch that raised: its rows keep the message as raw_output


def require(batch: dict[str, Any], columns: dict[str, str], stage: str) -> None:
    missing = [c for c in columns if c not in batch]
    if missing:
        wanted = "; ".join(f"{c}: {columns[c]}" for c in missing)
        raise KeyError(f"{stage} needs columns it did not get: {wanted}")


def take(batch: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in batch.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p and len(next(iter(p.values())))]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
