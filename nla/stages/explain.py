"""ExplainStage: activations -> `samples` AV explanations each (row per sample), parsed and statused.

Rows with status != ok pass through once with sample = -1. Generation errors on a batch are stored per row with
status 'error' (the job goes on).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from nla.batches import ERROR, OK, objects, require, take
from nla.settings import DType, SamplingSettings, torch_dtype
from nla.stages import set_threads
from nla.vllm_settings import VLLMSettings

if TYPE_CHECKING:
    from nla.client import AVEngine

COLUMNS = {"act_id": "activation id", "vector": "(n, d) float32 activations", "status": "ok | why the row failed"}


class ExplainStage:
    def __init__(self, *, av: str, sampling: SamplingSettings, device: str = "cpu", dtype: DType = "float32",
                 batch_size: int = 32, threads: int = 0, engine: AVEngine = "hf",
                 vllm: VLLMSettings | None = None) -> None:
        from nla.client import NLAClient

        set_threads(threads)
        self.client = NLAClient(av, device=device, dtype=torch_dtype(dtype), batch_size=batch_size, backend=engine,
                                vllm=vllm or VLLMSettings())
        self.sampling, self.samples = sampling, sampling.samples

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from nla.fast.sampling import sample_key

        require(batch, COLUMNS, "ExplainStage")
        t0 = time.perf_counter()
        ok = np.flatnonzero(batch["status"] == OK)
        rest = np.flatnonzero(batch["status"] != OK)
        index = np.concatenate([np.repeat(ok, self.samples), rest]).astype(np.int64)
        out = take(batch, index)
        n_ok = len(ok) * self.samples
        out["sample"] = np.concatenate([np.tile(np.arange(self.samples, dtype=np.int32), len(ok)),
                                        np.full(len(rest), -1, np.int32)])
        expl, raw, ntok, status = [None] * len(index), [""] * len(index), [0] * len(index), [""] * len(index)
        if n_ok:
            try:
                # one call, each vector's samples consecutive: the fast path prefills a vector once for its samples,
                # and each sample's stream is named by (seed, act_id, sample), whatever its batch
                keys = [sample_key(a, s) for a, s in zip(out["act_id"][:n_ok], out["sample"][:n_ok])]
                gens = self.client.explain(batch["vector"][index[:n_ok]], keys=keys, params=self.sampling.params())
                for r, g in enumerate(gens):
                    expl[r], raw[r], ntok[r], status[r] = g.explanation, g.raw_output, g.n_tokens, g.status
            except Exception as e:  # a failed batch is stored as failed rows, never stops the job
                for r in range(n_ok):
                    expl[r], raw[r], status[r] = None, f"{type(e).__name__}: {e}"[:500], ERROR
        out.update(explanation=objects(expl), raw_output=objects(raw), n_tokens=np.asarray(ntok, np.int32),
                   expl_status=objects(status))
        out["t_explain"] = np.full(len(index), (time.perf_counter() - t0) / max(1, len(index)))
        return out
