"""ScoreStage: (explanation, activation) -> AR reconstruction's mse_nrm and cos for every ok sample (NaN otherwise)."""

from __future__ import annotations

import time

import numpy as np
import torch

from nla.stages import require, set_threads

COLUMNS = {"explanation": "AV explanation (None unless expl_status is ok)", "expl_status": "ok | no_tags | ...",
           "vector": "(n, d) float32 activations"}


class ScoreStage:
    def __init__(self, *, ar: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 64,
                 threads: int = 0) -> None:
        from nla.client import NLACritic

        set_threads(threads)
        self.critic = NLACritic(ar, device=device, dtype=getattr(torch, dtype), batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        require(batch, COLUMNS, "ScoreStage")
        t0 = time.perf_counter()
        n = len(batch["expl_status"])
        mse, cos = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        ok = np.flatnonzero(batch["expl_status"] == "ok")
        if len(ok):
            m, c = self.critic.score_batch([batch["explanation"][i] for i in ok], batch["vector"][ok])
            mse[ok], cos[ok] = m.numpy(), c.numpy()
        batch["mse"], batch["cos"] = mse, cos
        batch["t_score"] = np.full(n, (time.perf_counter() - t0) / max(1, n))
        return batch
