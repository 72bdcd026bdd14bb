"""Cosine top-k over the activations: through the ANN index plus an exact scan of what it has not indexed, or exact.

`Searcher` answers for one table snapshot (latest or time-travelled). With an index (ann.py) it searches the indexed
rows that belong to the snapshot and scans exactly the snapshot's data files the index does not hold yet, then merges:
a search is never silently incomplete, and `SearchResult.method` says which way it went. The exact scan reads only
(act_id, vector) in batches (memory: one batch plus k rows). Joining winners with explanations is query.py's job;
building the index is ann.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nla.errors import NLAInputError
from nla.lake import storage
from nla.lake.schema import vectors_from_arrow
from nla.schemas import ACTIVATIONS

A = ACTIVATIONS.col
BATCH_ROWS = 16_384


@dataclass
class SearchResult:
    hits: list[tuple[str, float]]  # (act_id, cosine), best first
    method: str  # "index" | "index+scan" (the index and an exact scan of newer rows) | "exact"
    indexed_rows: int  # rows answered through the index
    scanned_rows: int  # rows scanned exactly
    index_version: int | None  # the table version the index covers (None: no index used)


def table_dataset(lake: Any, name: str, *, version: int | None = None) -> tuple[Any, int]:
    """(pyarrow dataset of table `name` with its declared schema, its Delta version). Local tables are read through
    Arrow's own filesystem: with deltalake's (its object store bridged through Python), Arrow's read-ahead threads
    were still calling into it after a query stopped early (LIMIT), and the process then crashed or hung at exit."""
    import pyarrow.fs as pafs

    t = lake.table(name, version=version)
    if lake.is_local:
        fs = pafs.SubTreeFileSystem(str(Path(lake.uri(name)).expanduser().resolve()), pafs.LocalFileSystem())
    else:  # s3://: Arrow's S3 filesystem with the lake's options; other stores: deltalake's own filesystem
        fs = storage.pyarrow_filesystem(lake.uri(name), lake.storage_options)
    return t.to_pyarrow_dataset(schema=lake.arrow_schema(name), filesystem=fs), t.version()


def unit_query(vector: Any, d: int | None) -> np.ndarray:
    """A query vector as a (d,) float32 unit vector; zero, NaN/inf or a wrong width is refused."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if d is not None and v.shape[0] != d:
        raise NLAInputError(f"query vector has d={v.shape[0]} but the activations table stores d={d}. Fix: use the "
                            "AR (or base model) that matches this lake's activations.")
    if not np.isfinite(v).all() or not np.any(v):
        raise NLAInputError("query vector is zero or has NaN/inf. Fix: pass a real reconstruction.")
    return v / np.float32(np.linalg.norm(v))


class Searcher:
    """Top-k by cosine over one snapshot of the activations (a pyarrow dataset from table_dataset)."""

    def __init__(self, lake: Any, dataset: Any, *, use_index: bool = True) -> None:
        self.lake, self.dataset = lake, dataset
        self.d = dataset.schema.field(A.vector).type.list_size
        self._prepared = not use_index
        self.index: Any = None

    def _prepare(self) -> None:
        """Open the index (once) and split the snapshot into indexed rows and data files to scan exactly."""
        import pyarrow.dataset as pds

        from nla.lake.ann import LoadedIndex

        self._prepared = True
        self.index = LoadedIndex.open(self.lake)
        if self.index is None:
            return
        frags = list(self.dataset.get_fragments())
        snapshot = {f.path for f in frags}
        self.live = self.index.live_mask(snapshot)
        self.indexed_rows = int(self.live.sum())
        held = set(self.index.paths)
        tail = [f for f in frags if f.path not in held]
        self.tail = pds.FileSystemDataset(tail, schema=self.dataset.schema, format=self.dataset.format,
                                          filesystem=self.dataset.filesystem)
        self.tail_rows = sum(f.count_rows() for f in tail)

    def nearest(self, vector: Any, k: int, *, exact: bool = False) -> SearchResult:
        """The k rows nearest by cosine to `vector`; exact=True scans every row instead of using the index."""
        if k < 1:
            raise NLAInputError(f"k={k}: must be >= 1.")
        q = unit_query(vector, self.d)
        if not exact and not self._prepared:
            self._prepare()
        if exact or self.index is None:
            hits, n = top_k_cosine(self.dataset, q, k)
            return SearchResult(hits, "exact", 0, n, None)
        hits = self.index.search(q, k, live=self.live) if self.indexed_rows else []
        method = "index"
        if self.tail_rows:
            more, _ = top_k_cosine(self.tail, q, k)
            hits = sorted(hits + more, key=lambda h: -h[1])[:k]
            method = "index+scan"
        return SearchResult(hits, method, self.indexed_rows, self.tail_rows, self.index.manifest.table_version)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def cosines(v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n,) cosine of each row of v (n, d) with the unit vector q: the one formula exact scans and reranks share."""
    return (v @ q) / np.maximum(np.linalg.norm(v, axis=1), 1e-12)


def top_k_cosine(dataset: Any, query: np.ndarray, k: int, *,
                 batch_rows: int = BATCH_ROWS) -> tuple[list[tuple[str, float]], int]:
    """([(act_id, cosine)] of the k rows of `dataset` closest to `query`, rows scanned): an exact streaming scan."""
    import pyarrow.dataset as pds

    q = np.asarray(query, np.float32) / max(float(np.linalg.norm(query)), 1e-12)
    best_ids: list[str] = []
    best = np.empty(0, np.float32)
    rows = 0
    scan = pds.ParquetFragmentScanOptions(pre_buffer=False)  # decode page by page, not whole column chunks at once
    for batch in dataset.to_batches(columns=[A.act_id, A.vector], batch_size=batch_rows, batch_readahead=1,
                                    fragment_readahead=1, fragment_scan_options=scan):
        if batch.num_rows == 0:
            continue
        rows += batch.num_rows
        sims = cosines(vectors_from_arrow(batch.column(1)), q)
        take = np.argpartition(-sims, k)[:k] if len(sims) > k else np.arange(len(sims))
        best = np.concatenate([best, sims[take]])
        best_ids += batch.column(0).take(take).to_pylist()
        order = np.argsort(-best, kind="stable")[:k]
        best, best_ids = best[order], [best_ids[i] for i in order]
    return list(zip(best_ids, best.tolist())), rows
