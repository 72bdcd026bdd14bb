"""ReadShard: one shard path per input row -> batches of documents (streamed; bad documents become error rows)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nla.batches import objects, require
from nla.labeling.corpus import Shard, ShardError, read_shard
from nla.labeling.identity import name_of

COLUMNS = {"shard": "shard id (path relative to the input root)", "path": "absolute path or s3:// URI of the shard",
           "format": "parquet | jsonl | txt | hf"}


class ReadShard:
    def __init__(self, *, text_column: str = "text", id_column: str = "", batch_docs: int = 64,
                 storage_options: dict[str, str] | None = None, threads: int = 0) -> None:
        self.text_column, self.id_column, self.batch_docs = text_column, id_column, batch_docs
        self.storage_options = storage_options  # for shards on a store: resolved by the driver, not this node

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        require(batch, COLUMNS, "ReadShard")
        for sid, path, fmt in zip(batch["shard"], batch["path"], batch["format"]):
            shard = Shard(str(sid), str(path), str(fmt), name=name_of(str(sid)))
            try:
                for docs in read_shard(shard, text_column=self.text_column, id_column=self.id_column,
                                       batch_docs=self.batch_docs, storage_options=self.storage_options):
                    n = len(docs["text"])
                    yield {"shard": objects([shard.id] * n), "doc_id": objects(docs["doc_id"]),
                           "text": objects(docs["text"]), "error": objects(docs["error"])}
            except ShardError as e:
                yield {"shard": objects([shard.id]), "doc_id": objects([""]), "text": objects([""]),
                       "error": objects([f"SHARD {e}"])}


ACT_COLUMNS = {"shard": "shard id of the activations table"}


class ReadActivations:
    """One shard id of the lake's activations table per input row -> its activation rows (for relabeling)."""

    def __init__(self, *, lake: str, storage_options: dict[str, str] | None = None, batch_rows: int = 256,
                 threads: int = 0) -> None:
        from nla.lake.store import Lake

        self.lake = Lake(lake, storage_options=storage_options)
        self.batch_rows = batch_rows

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        import pyarrow.dataset as pds

        from nla.lake.schema import vectors_from_arrow
        from nla.schemas import ACTIVATIONS

        require(batch, ACT_COLUMNS, "ReadActivations")
        A = ACTIVATIONS.col
        ds = self.lake.table(ACTIVATIONS.name).to_pyarrow_dataset(schema=self.lake.arrow_schema(ACTIVATIONS.name))
        for sid in batch["shard"]:
            for b in ds.to_batches(filter=pds.field(A.shard) == str(sid), batch_size=self.batch_rows):
                if b.num_rows == 0:
                    continue
                n = b.num_rows
                yield {"shard": objects([str(sid)] * n), "doc_id": objects(b.column(A.doc_id).to_pylist()),
                       "act_id": objects(b.column(A.act_id).to_pylist()),
                       "position": b.column(A.position).to_numpy(),
                       "token_id": b.column(A.token_id).fill_null(-1).to_numpy(),  # -1: an imported vector
                       "token": objects(b.column(A.token).to_pylist()),
                       "context": objects(b.column(A.context).to_pylist()),
                       "vector": vectors_from_arrow(b.column(A.vector)), "status": objects(["ok"] * n),
                       "message": objects([""] * n)}
