"""Ray Data stages as plain callable classes: heavy state in __init__, `__call__(batch) -> batch` on numpy dicts.

Each stage declares the columns it reads (with a description) and checks them on its first batch. Rows whose
`status` is not "ok" (a bad document, an unreadable shard) pass through every stage untouched so the committer can
record them. No Ray import: jobs/ decides concurrency and resources; tests call the classes on dicts.
"""

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


def set_threads(threads: int) -> None:
    """torch CPU threads for this actor (0 keeps Ray's default: the actor's num_cpus, at least 1)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


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
