"""ScoreStage: (explanation, activation) -> AR reconstruction's mse_nrm and cos for every ok sample (NaN otherwise)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from nla.batches import require
from nla.settings import DType, torch_dtype
from nla.stages import set_threads

if TYPE_CHECKING:
    import torch

COLUMNS = {"explanation": "AV explanation (None unless expl_status is ok)", "expl_status": "ok | no_tags | ...",
           "vector": "(n, d) float32 activations"}


class ScoreStage:
    def __init__(self, *, ar: str, device: str = "cpu", dtype: DType = "float32", batch_size: int = 64,
                 threads: int = 0, fast: bool = False) -> None:
        from nla.client import NLACritic

        set_threads(threads)
        self.critic = NLACritic(ar, device=device, dtype=torch_dtype(dtype), batch_size=batch_size)
        self.fast = None
        if fast:  # ragged, length-bucketed prefill of the AR inputs (nla/fast/prefill.py)
            from nla.fast.prefill import FastAR

            self.fast = FastAR(self.critic.model, pad_id=self.critic.tokenizer.pad_token_id or 0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        require(batch, COLUMNS, "ScoreStage")
        t0 = time.perf_counter()
        n = len(batch["expl_status"])
        mse, cos = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        ok = np.flatnonzero(batch["expl_status"] == "ok")
        if len(ok):
            explanations = [batch["explanation"][i] for i in ok]
            if self.fast is None:
                m, c = self.critic.score_batch(explanations, batch["vector"][ok])
            else:
                m, c = self._fast_scores(explanations, batch["vector"][ok])
            mse[ok], cos[ok] = m.numpy(), c.numpy()
        batch["mse"], batch["cos"] = mse, cos
        batch["t_score"] = np.full(n, (time.perf_counter() - t0) / max(1, n))
        return batch

    def _fast_scores(self, explanations: list[str], vectors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """NLACritic.score_batch on the fast path: the same AR inputs (template, BOS), unpadded."""
        import torch

        from nla import prompt as P
        from nla.metrics import cosine, mse_nrm

        c = self.critic
        ids = c.tokenizer([P.ar_text(c.meta.ar_template, e) for e in explanations],
                          add_special_tokens=True)["input_ids"]
        r = self.fast.reconstruct_ids(ids).float().cpu()
        v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        return mse_nrm(r, v, c.mse_scale), cosine(r, v)
