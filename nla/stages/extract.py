"""ExtractStage: documents -> activations at layer K (the base model cut after block K), one row per position.

Bad documents (error set upstream, too short for any position) become a row with status != ok and a zero vector.
"""

from __future__ import annotations

import time

import numpy as np

from nla.batches import OK, concat, objects, require
from nla.extract_config import ExtractConfig
from nla.lake.rows import act_id
from nla.settings import DType, torch_dtype
from nla.stages import set_threads

COLUMNS = {"shard": "shard id", "doc_id": "document id", "text": "document text",
           "error": "'' for a good document, else why it is bad"}


class ExtractStage:
    def __init__(self, *, base: str, base_id: str, config: ExtractConfig, device: str = "cpu",
                 dtype: DType = "float32", threads: int = 0, fast: bool = False) -> None:
        from nla.extract import Extractor

        set_threads(threads)
        self.cfg = config
        if fast:  # length-bucketed batches of up to 32k tokens through our own block loop (nla/fast/prefill.py)
            from nla import hf
            from nla.fast.prefill import FastExtractor

            model = hf.load_causal_lm(base, dtype=torch_dtype(dtype), device=device, n_blocks=self.cfg.layer + 1)
            self.extractor: Extractor = FastExtractor(model, hf.load_tokenizer(base), self.cfg, device=device)
        else:
            self.extractor = Extractor.from_pretrained(base, self.cfg, device=device, dtype=torch_dtype(dtype))
        self.base_id, self.d = base_id, self.extractor.d_model

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        require(batch, COLUMNS, "ExtractStage")
        t0 = time.perf_counter()
        good = [i for i, e in enumerate(batch["error"]) if not e]
        parts = []
        if good:
            texts = [batch["text"][i] for i in good]
            docs = [str(batch["doc_id"][i]) for i in good]
            shard_of = {str(batch["doc_id"][i]): batch["shard"][i] for i in good}
            rows = self.extractor(texts, docs)
            n = len(rows["position"])
            parts.append({
                "shard": objects([shard_of[d] for d in rows["doc_id"]]), "doc_id": rows["doc_id"],
                "act_id": objects([act_id(self.base_id, self.cfg.layer, d, int(p))
                                   for d, p in zip(rows["doc_id"], rows["position"])]),
                "position": rows["position"].astype(np.int32), "token_id": rows["token_id"],
                "token": rows["token"], "context": rows["context"], "vector": rows["vector"],
                "status": objects([OK] * n), "message": objects([""] * n)})
            short = sorted(set(docs) - set(rows["doc_id"].tolist()))
            parts.append(self._failures([shard_of[d] for d in short], short, "short_document",
                                        [f"no token at position >= {self.cfg.min_position}"] * len(short)))
        bad = [i for i, e in enumerate(batch["error"]) if e]
        if bad:
            errors = [str(batch["error"][i]) for i in bad]
            parts.append(self._failures([batch["shard"][i] for i in bad], [str(batch["doc_id"][i]) for i in bad],
                                        None, errors))
        out = concat(parts) or self._failures([], [], None, [])
        out["t_extract"] = np.full(len(out["status"]), (time.perf_counter() - t0) / max(1, len(out["status"])))
        return out

    def _failures(self, shards: list, docs: list[str], status: str | None, messages: list[str]) -> dict:
        n = len(docs)
        statuses = [status or ("bad_shard" if m.startswith("SHARD ") else "bad_document") for m in messages]
        return {"shard": objects(shards), "doc_id": objects(docs), "act_id": objects([""] * n),
                "position": np.full(n, -1, np.int32), "token_id": np.full(n, -1, np.int64),
                "token": objects([""] * n), "context": objects([""] * n),
                "vector": np.zeros((n, self.d), np.float32), "status": objects(statuses),
                "message": objects([m.removeprefix("SHARD ") for m in messages])}
