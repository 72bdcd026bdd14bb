"""Targets for mined examples, as Ray Data stages: read a training set's files, then relabel each row's explanation.

ReadTrainingFile: one parquet file of a training-set table per input row -> its rows (vectors as (n, d) float32).
TeachStage: method "teacher" asks an OpenAI-compatible endpoint about each row's text prefix (threads in flight);
method "best-of-k" samples k AV explanations and keeps the one the AR reconstructs best, if it beats the mined one.
Rows that get no target keep `explanation` None and are counted, never written as targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

import numpy as np

from nla.batches import objects, require
from nla.stages import set_threads

if TYPE_CHECKING:
    from nla.train.targets import TeacherSettings

FILE_COLUMNS = {"file": "path or URI of one parquet file of the training-set table"}
COLUMNS = {"vector": "(n, d) float32 activations", "context": "text prefix ending at the activation's token",
           "explanation": "the explanation the row was mined with", "mse": "its mse when mined"}


class ReadTrainingFile:
    def __init__(self, *, d: int, batch_rows: int = 256, storage_options: dict[str, str] | None = None,
                 threads: int = 0) -> None:
        self.d, self.batch_rows, self.storage_options = d, batch_rows, storage_options

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        import pyarrow.parquet as pq

        from nla.lake.storage import open_input

        require(batch, FILE_COLUMNS, "ReadTrainingFile")
        for uri in batch["file"]:
            with open_input(str(uri), self.storage_options, random_access=True) as f:
                for b in pq.ParquetFile(f).iter_batches(batch_size=self.batch_rows):
                    cols = {n: objects(b.column(n).to_pylist()) for n in b.schema.names if n != "vector"}
                    flat = b.column("vector").flatten().to_numpy(zero_copy_only=False)
                    cols["vector"] = flat.reshape(-1, self.d).astype(np.float32, copy=False)
                    yield cols


class TeachStage:
    def __init__(self, *, method: Literal["teacher", "best-of-k"], teacher: TeacherSettings | None = None,
                 av: str = "", ar: str = "",
                 k: int = 8, temperature: float = 1.0, max_new_tokens: int = 200, in_flight: int = 8,
                 device: str = "cpu", threads: int = 0) -> None:
        set_threads(threads)
        self.method, self.k, self.temperature, self.max_new_tokens = method, k, temperature, max_new_tokens
        if method == "teacher":
            from nla.train.targets import Teacher, TeacherSettings

            self.teacher = Teacher(teacher or TeacherSettings())
            self.pool = ThreadPoolExecutor(max(1, in_flight))
        else:
            from nla.client import NLAClient, NLACritic

            self.client, self.critic = NLAClient(av, device=device), NLACritic(ar, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from nla.train.targets import best_of_k

        require(batch, COLUMNS, "TeachStage")
        n = len(batch["vector"])
        if self.method == "teacher":
            texts = list(self.pool.map(self.teacher.explain, [str(c or "") for c in batch["context"]]))
            mse = np.full(n, np.nan, np.float32)
            av = objects([f"teacher:{self.teacher.s.model}"] * n)
        else:
            texts, mse = best_of_k(self.client, self.critic, torch.from_numpy(batch["vector"]), self.k,
                                   temperature=self.temperature, max_new_tokens=self.max_new_tokens)
            old = np.asarray([np.inf if m is None or np.isnan(m) else m for m in batch["mse"]], np.float32)
            texts = [t if m < o else None for t, m, o in zip(texts, mse, old)]  # only improvements become targets
            mse = np.where(np.isfinite(mse), mse, np.nan).astype(np.float32)
            av = objects([f"best-of-{self.k}"] * n)
        out = dict(batch)
        out.update(explanation=objects(texts), mse=mse, av=av, cos=np.full(n, np.nan, np.float32))
        return out
