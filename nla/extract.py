"""Activation extraction: the output of block K (= HF hidden_states[K+1]) at sampled or all positions.

The forward stops after block K: a hook on block K captures its output and aborts the rest of the forward, and a
model loaded from a folder holds only blocks 0..K. Position sampling follows the release: positions >= min_position,
never special tokens, up to N per document, RNG keyed by (seed, doc_id) so any sharding reproduces the same rows.
It does not write tables or decide concurrency (jobs/ does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nla import hf
from nla.errors import NLAInputError
from nla.extract_config import ExtractConfig, doc_id_for, position_rng


# A document longer than max_length * CUT_CHARS_PER_TOKEN characters is tokenized from a prefix of that many
# characters when the prefix alone reaches CUT_MARGIN tokens past max_length (see bounded_texts).
CUT_CHARS_PER_TOKEN = 32
CUT_MARGIN = 64


class _StopForward(Exception):
    pass


def bounded_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[str]:
    """The texts to tokenize for the first max_length tokens of each: a fast tokenizer encodes a whole document
    before it truncates, so a 10 MB document would cost 10 MB of tokenizing for 1,024 tokens. A long document is cut
    to its first max_length * 32 characters when that prefix alone holds max_length + 64 tokens: the cut can change
    only the prefix's last tokens, far past the ones kept, so the rows are the whole document's. A prefix with fewer
    tokens (long runs a token covers many characters of) keeps the whole document, and so does a tokenizer that
    truncates on the left (it keeps the last tokens)."""
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return list(texts)
    limit = max_length * CUT_CHARS_PER_TOKEN
    out = []
    for t in texts:
        if len(t) > limit:
            head = t[:limit]
            if len(tokenizer(head, add_special_tokens=False)["input_ids"]) >= max_length + CUT_MARGIN:
                t = head
        out.append(t)
    return out


class Extractor:
    """Callable on batches of documents: returns one row per sampled position with its float32 vector."""

    def __init__(self, model: Any, tokenizer: Any, config: ExtractConfig, *, device: str = "cpu") -> None:
        self.model, self.tokenizer, self.cfg, self.device = model, tokenizer, config, device
        self.blocks = hf.decoder(model).layers
        if not 0 <= config.layer < len(self.blocks):
            raise NLAInputError(f"layer {config.layer}: the model has blocks 0..{len(self.blocks) - 1}. "
                                "Fix: choose K inside that range (the sidecar's extraction_layer_index).")
        self.special_ids = set(tokenizer.all_special_ids)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.d_model = model.config.get_text_config().hidden_size

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: ExtractConfig, *, device: str = "cpu",
                        dtype: torch.dtype = torch.float32) -> Extractor:
        """Load only blocks 0..K of the base model in `folder`."""
        model = hf.load_causal_lm(folder, dtype=dtype, device=device, n_blocks=config.layer + 1)
        return cls(model, hf.load_tokenizer(folder), config, device=device)

    @torch.inference_mode()
    def block_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) output of block K; blocks after K never run."""
        captured: dict[str, torch.Tensor] = {}

        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = self.blocks[self.cfg.layer].register_forward_hook(hook)
        try:
            self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                       use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["h"]

    def positions(self, ids: list[int], doc_id: str) -> list[int]:
        eligible = [p for p in range(self.cfg.min_position, len(ids)) if ids[p] not in self.special_ids]
        if self.cfg.all_positions or len(eligible) <= self.cfg.positions_per_doc:
            return eligible
        picked = position_rng(self.cfg.seed, doc_id).choice(len(eligible), self.cfg.positions_per_doc, replace=False)
        return sorted(eligible[i] for i in picked)

    def __call__(self, texts: list[str], doc_ids: list[str] | None = None) -> dict[str, np.ndarray]:
        """Columns doc_id, position, token_id, token, context, vector (N, d) float32 for a list of documents."""
        if doc_ids is None:
            doc_ids = [doc_id_for(t) for t in texts]
        check_texts(texts, doc_ids)
        picked: list[tuple[str, list[int], int]] = []  # (doc_id, its token ids, position) per row
        vectors: list[np.ndarray] = []
        for start in range(0, len(texts), self.cfg.batch_size):
            self._extract_batch(texts[start:start + self.cfg.batch_size],
                                doc_ids[start:start + self.cfg.batch_size], picked, vectors)
        return self.columns(picked, np.stack(vectors) if vectors else np.zeros((0, self.d_model), np.float32))

    def columns(self, picked: list[tuple[str, list[int], int]], vectors: np.ndarray) -> dict[str, np.ndarray]:
        """The output columns of the picked (doc_id, token ids, position) rows and their vectors (N, d): the token
        at the position, the text up to it (its last context_chars) and the vector as float32."""
        token_ids = [row[p] for _, row, p in picked]
        return {
            "doc_id": np.asarray([doc for doc, _, _ in picked], dtype=object),
            "position": np.asarray([p for _, _, p in picked], dtype=np.int64),
            "token_id": np.asarray(token_ids, dtype=np.int64),
            "token": np.asarray([self.tokenizer.decode([t]) for t in token_ids], dtype=object),
            "context": np.asarray([self.tokenizer.decode(row[:p + 1], skip_special_tokens=True)
                                   [-self.cfg.context_chars:] for _, row, p in picked], dtype=object),
            "vector": vectors.reshape(len(picked), self.d_model).astype(np.float32, copy=False),
        }

    def _extract_batch(self, texts: list[str], doc_ids: list[str], picked: list[tuple[str, list[int], int]],
                       vectors: list[np.ndarray]) -> None:
        enc = self.tokenizer(bounded_texts(self.tokenizer, texts, self.cfg.max_length), add_special_tokens=True,
                             truncation=True, max_length=self.cfg.max_length, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]  # (B, T)
        per_doc = []
        for b, doc in enumerate(doc_ids):
            row = ids[b][mask[b].bool()].tolist()  # real tokens of this document (padding side independent)
            per_doc.append((row, self.positions(row, doc)))
        if not any(pos for _, pos in per_doc):
            return
        h = self.block_output(ids, mask).float().cpu()  # (B, T, d)
        for b, (doc, (row, pos)) in enumerate(zip(doc_ids, per_doc)):
            offset = int((~mask[b].bool()).nonzero().numel()) if self.tokenizer.padding_side == "left" else 0
            for p in pos:
                picked.append((doc, row, p))
                vectors.append(h[b, offset + p].numpy())


def check_texts(texts: list[str], doc_ids: list[str]) -> None:
    """Every document's text is a str (a corpus read as bytes or numbers is refused, naming the document)."""
    for t, doc in zip(texts, doc_ids):
        if not isinstance(t, str):
            raise NLAInputError(f"document {doc!r}: text is {type(t).__name__}, expected str. "
                                "Fix: decode the corpus as UTF-8 text first.")
