"""Cosine top-k over the activations table, streamed: bounded memory whatever the table's size.

Reads only (act_id, vector) in batches (no prefetching of whole files), keeps the best k per batch and merges them.
Memory is one batch plus k rows; SQL users have the `nearest` macro (DuckDB) for small lakes. Joining the winners
with their explanations is query.py's job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nla.lake.schema import vectors_from_arrow
from schemas import ACTIVATIONS

A = ACTIVATIONS.col
BATCH_ROWS = 16_384


def top_k_cosine(dataset: Any, query: np.ndarray, k: int, *, batch_rows: int = BATCH_ROWS) -> list[tuple[str, float]]:
    """[(act_id, cosine)] of the k rows of `dataset` (a pyarrow dataset of activations) closest to `query`."""
    import pyarrow.dataset as pds

    q = np.asarray(query, np.float32) / max(float(np.linalg.norm(query)), 1e-12)
    best_ids: list[str] = []
    best = np.empty(0, np.float32)
    scan = pds.ParquetFragmentScanOptions(pre_buffer=False)  # decode page by page, not whole column chunks at once
    for batch in dataset.to_batches(columns=[A.act_id, A.vector], batch_size=batch_rows, batch_readahead=1,
                                    fragment_readahead=1, fragment_scan_options=scan):
        if batch.num_rows == 0:
            continue
        v = vectors_from_arrow(batch.column(1))  # (n, d)
        sims = (v @ q) / np.maximum(np.linalg.norm(v, axis=1), 1e-12)
        take = np.argpartition(-sims, k)[:k] if len(sims) > k else np.arange(len(sims))
        best = np.concatenate([best, sims[take]])
        best_ids += batch.column(0).take(take).to_pylist()
        order = np.argsort(-best, kind="stable")[:k]
        best, best_ids = best[order], [best_ids[i] for i in order]
    return list(zip(best_ids, best.tolist()))
