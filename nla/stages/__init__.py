"""Ray Data stages as plain callable classes: heavy state in __init__, `__call__(batch) -> batch` on numpy dicts.

Each stage declares the columns it reads (with a description) and checks them on its first batch. Rows whose
`status` is not "ok" (a bad document, an unreadable shard) pass through every stage untouched so the committer can
record them. No Ray import: jobs/ decides concurrency and resources; tests call the classes on dicts.
"""

from __future__ import annotations


def set_threads(threads: int) -> None:
    """torch CPU threads for this actor (0 keeps Ray's default: the actor's num_cpus, at least 1)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
