"""Training examples from a lake table: (vectors, explanations, act_ids), checked before any training starts.

Sources: `training_sets/<name>` (mined by `nla mine`, or targets made by `nla teach` / best-of-k), the lake's
`activations` (GRPO needs vectors only), or `labels` rows through a mined set. Rows stream from Delta in batches
and stop at `limit`; training sets are the small, mined part of a lake, so they are held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nla.errors import NLAInputError
from nla.lake.schema import vectors_from_arrow
from nla.lake.store import Lake
from nla.schemas import ACTIVATIONS, TRAINING_SET

BATCH_ROWS = 8192


@dataclass
class Examples:
    act_ids: list[str]
    vectors: torch.Tensor  # (n, d) float32
    explanations: list[str | None]

    def __len__(self) -> int:
        return len(self.act_ids)

    def subset(self, index: np.ndarray | list[int]) -> Examples:
        index = list(map(int, index))
        return Examples([self.act_ids[i] for i in index], self.vectors[index],
                        [self.explanations[i] for i in index])

    def split_by_act(self, eval_fraction: float, seed: int = 0) -> tuple[Examples, Examples]:
        """Train / held-out split by activation id hash (stable across runs and workers)."""
        keys = np.array([hash_unit(a, seed) for a in self.act_ids])
        return self.subset(np.flatnonzero(keys >= eval_fraction)), self.subset(np.flatnonzero(keys < eval_fraction))


def hash_unit(key: str, seed: int) -> float:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def load_examples(lake: Lake, table: str, *, d: int, need_explanations: bool, limit: int | None = None,
                  where: str | None = None) -> Examples:
    """Read (act_id, vector[, explanation]) rows of `table`; one clear error for an empty table, a wrong d, or
    examples without explanations when the role needs them."""
    name = table if table in (ACTIVATIONS.name,) or table.startswith(f"{TRAINING_SET.name}/") \
        else f"{TRAINING_SET.name}/{table}"
    have_d = lake.layout(name).get("d")  # NLATableNotFound names the lake's tables
    if have_d != d:
        raise NLAInputError(f"--data {table}: its vectors have d={have_d}, the checkpoint's d_model is {d}. Fix: train "
                            "on activations extracted from this checkpoint's base model and layer.")
    cols = ["act_id", "vector"] + (["explanation"] if name != ACTIVATIONS.name else [])
    ds = lake.table(name).to_pyarrow_dataset(schema=lake.arrow_schema(name))
    ids, vecs, texts = [], [], []
    n = 0
    for b in ds.to_batches(columns=cols, batch_size=BATCH_ROWS):
        if limit is not None:
            b = b.slice(0, max(0, limit - n))
        if not b.num_rows:
            if limit is not None and n >= limit:
                break
            continue
        ids.extend(b.column("act_id").to_pylist())
        vecs.append(vectors_from_arrow(b.column("vector")))
        texts.extend(b.column("explanation").to_pylist() if "explanation" in b.schema.names else [None] * b.num_rows)
        n += b.num_rows
    if not n:
        raise NLAInputError(f"--data {table}: the table has no usable rows. Fix: mine examples first "
                            "(`nla mine --where \"mse > 0.8\" --name hard_v1`) or label a corpus (`nla label`).")
    vectors = torch.from_numpy(np.concatenate(vecs).astype(np.float32, copy=False))
    if not torch.isfinite(vectors).all():
        bad = int((~torch.isfinite(vectors).all(1)).sum())
        raise NLAInputError(f"--data {table}: {bad} vectors contain NaN or inf. Fix: filter them out when mining "
                            "(e.g. --where \"mse IS NOT NULL\") or re-extract them.")
    if need_explanations:
        missing = [i for i, t in enumerate(texts) if not (t or "").strip()]
        if missing:
            raise NLAInputError(f"--data {table}: {len(missing)} of {n} rows have no explanation (their AV sample had "
                                f"no <explanation> tags, e.g. act_id {ids[missing[0]]}). Fix: mine with "
                                "\"status = 'ok'\", or make targets with `nla teach` / best-of-k first.")
    return Examples(ids, vectors, texts)
