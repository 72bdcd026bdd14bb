"""Fast prefill through blocks 0..K for extraction and the AR: hidden states read at chosen (row, position) pairs.

Sequences arrive ragged (flat ids + lengths, as Arrow stores list columns). They are sorted by length and cut into
batches of at most `max_tokens` padded tokens, so the GPU gets large matrix products and little padding. Rows are
right padded and attention is causal with no mask, so a real token never sees a pad and SDPA takes its flash kernel.
All batches' ids go to the GPU in one pinned copy, the wanted rows are gathered there (the AR's value head applied
there too), and one pinned copy brings the (N, d) float32 result back. Tokenizing, sampling positions and writing
tables are the callers' (nla.extract, nla.ar, the stages); this module only runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nla.extract import Extractor, bounded_texts, check_texts
from nla.extract_config import ExtractConfig, doc_id_for
from nla.fast.attention import causal_attention
from nla.fast.blocks import Blocks


@dataclass
class Ragged:
    """Many token sequences as one flat int64 array plus per-sequence lengths."""

    values: np.ndarray  # (sum of lengths,) int64
    lengths: np.ndarray  # (n,) int64

    @classmethod
    def from_lists(cls, seqs: list[list[int]] | list[np.ndarray]) -> Ragged:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        values = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if seqs else np.zeros(0, np.int64)
        return cls(values, lengths)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def padded(self, rows: np.ndarray, width: int, pad_id: int) -> np.ndarray:
        """(len(rows), width) ids of the given sequences, right padded with pad_id: one vectorised gather."""
        col = np.arange(width, dtype=np.int64)[None]  # (1, W)
        inside = col < self.lengths[rows][:, None]  # (R, W)
        idx = np.where(inside, self.offsets[rows][:, None] + col, 0)
        return np.where(inside, self.values[idx] if len(self.values) else 0, pad_id)


def length_batches(lengths: np.ndarray, *, max_tokens: int, max_rows: int,
                   multiple: int = 8) -> list[tuple[np.ndarray, int]]:
    """(row indices, padded width) per batch: rows sorted longest first, each batch's rows x width <= max_tokens.

    Sorting puts sequences of similar length together, so padding stays small; the width is rounded up to
    `multiple` for the tensor cores."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = -(-int(lengths[order[start]]) // multiple) * multiple
        rows = max(1, min(max_rows, max_tokens // width))
        batches.append((order[start:start + rows], width))
        start += rows
    return batches


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class FastPrefill:
    """Runs blocks 0..n_blocks-1 of `model` on ragged sequences and returns hidden states at (row, position) pairs.

    max_tokens: padded tokens per forward (32k fills an H100 at d = 3584); max_rows caps the rows per forward."""

    def __init__(self, model: Any, *, n_blocks: int, max_tokens: int = 32768, max_rows: int = 1024,
                 pad_id: int = 0, fuse: bool | None = None) -> None:
        self.blocks = Blocks(model, n_blocks, fuse=fuse)
        self.max_tokens, self.max_rows, self.pad_id = max_tokens, max_rows, pad_id
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rope_for(self, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's rotary row for `rows` right-padded rows of `width`: (R, rows * width, D)."""
        if self._rope is None or self._rope[0].shape[1] < width:
            self._rope = self.blocks.rope_table(max(width, 1024))
        cos, sin = self._rope
        return cos[:, :width].repeat(1, rows, 1), sin[:, :width].repeat(1, rows, 1)

    def _attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return causal_attention(q, k, v, self.blocks.scale, self.blocks.window[i])

    @torch.inference_mode()
    def hidden_at(self, seqs: Ragged | list[list[int]], rows: np.ndarray, positions: np.ndarray, *,
                  head: torch.nn.Module | None = None) -> torch.Tensor:
        """(N, d) float32 on the CPU: the last block's output at (rows[i], positions[i]), `head` applied on the GPU.

        Positions count from the sequence's first token (its BOS included)."""
        if isinstance(seqs, list):
            seqs = Ragged.from_lists(seqs)
        rows, positions = np.asarray(rows, np.int64), np.asarray(positions, np.int64)
        if len(rows) and (positions.min() < 0 or (positions >= seqs.lengths[rows]).any()):
            raise IndexError("a position lies outside its sequence")
        dev, d = self.blocks.device, self.blocks.d_model
        batches = length_batches(seqs.lengths, max_tokens=self.max_tokens, max_rows=self.max_rows)
        # Where each sequence sits: its batch and its row inside it; then the wanted pairs grouped by batch.
        batch_of = np.empty(len(seqs.lengths), np.int64)
        slot_of = np.empty(len(seqs.lengths), np.int64)
        for b, (members, _) in enumerate(batches):
            batch_of[members], slot_of[members] = b, np.arange(len(members))
        pair_order = np.argsort(batch_of[rows], kind="stable")
        counts = np.bincount(batch_of[rows], minlength=len(batches))
        # All ids and gather indices travel in one pinned copy each.
        ids = _to_device(np.concatenate([seqs.padded(m, w, self.pad_id).ravel() for m, w in batches]
                                        or [np.zeros(0, np.int64)]), dev)
        gather = _to_device(np.stack([slot_of[rows][pair_order], positions[pair_order]]), dev)  # (2, N)
        out_dim = d if head is None else head.out_features
        out = torch.empty((len(rows), out_dim), dtype=torch.float32, device=dev)
        start, pair_start = 0, 0
        for (members, width), n_pairs in zip(batches, counts):
            n_tok = len(members) * width
            if n_pairs:
                batch_ids = ids[start:start + n_tok].view(len(members), width)
                cos, sin = self._rope_for(len(members), width)
                h = self.blocks.forward(self.blocks.embed(batch_ids), cos, sin, self._attend)  # (B, W, d)
                r, p = gather[:, pair_start:pair_start + n_pairs]
                picked = h[r, p]  # (n_pairs, d)
                out[pair_start:pair_start + n_pairs] = (head(picked) if head is not None else picked).float()
            start, pair_start = start + n_tok, pair_start + n_pairs
        host = torch.empty_like(out, device="cpu", pin_memory=dev.type == "cuda")
        host.copy_(out, non_blocking=True)
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()
        result = torch.empty_like(host)
        result[torch.from_numpy(pair_order)] = host  # back to the callers' order
        return result


class FastAR:
    """The AR's reconstruction on the fast path: ARModel's blocks and value head, read at each row's last token."""

    def __init__(self, ar: Any, **kwargs: Any) -> None:
        self.ar = ar
        self.prefill = FastPrefill(ar.lm, n_blocks=len(ar.backbone.layers), **kwargs)

    def reconstruct_ids(self, seqs: Ragged | list[list[int]]) -> torch.Tensor:
        """(N, d) float32 raw reconstructions from tokenised AR inputs (template filled, BOS included)."""
        if isinstance(seqs, list):
            seqs = Ragged.from_lists(seqs)
        rows = np.arange(len(seqs.lengths))
        return self.prefill.hidden_at(seqs, rows, seqs.lengths - 1, head=self.ar.value_head)


class FastExtractor(Extractor):
    """Extractor with the fast forward: same columns and positions, all documents in length-bucketed batches."""

    def __init__(self, model: Any, tokenizer: Any, config: ExtractConfig, *, device: str = "cpu",
                 **kwargs: Any) -> None:
        super().__init__(model, tokenizer, config, device=device)
        self.prefill = FastPrefill(model, n_blocks=config.layer + 1, pad_id=tokenizer.pad_token_id, **kwargs)

    def __call__(self, texts: list[str], doc_ids: list[str] | None = None) -> dict[str, np.ndarray]:
        if doc_ids is None:
            doc_ids = [doc_id_for(t) for t in texts]
        check_texts(texts, doc_ids)
        ids = self.tokenizer(bounded_texts(self.tokenizer, texts, self.cfg.max_length), add_special_tokens=True,
                             truncation=True, max_length=self.cfg.max_length)["input_ids"]
        picked = [self.positions(row, doc) for row, doc in zip(ids, doc_ids)]
        rows = np.repeat(np.arange(len(ids)), [len(p) for p in picked])
        positions = np.fromiter((p for pos in picked for p in pos), dtype=np.int64, count=len(rows))
        vectors = self.prefill.hidden_at(Ragged.from_lists(ids), rows, positions).numpy()
        return self.columns([(doc_ids[r], ids[r], int(p)) for r, p in zip(rows, positions)], vectors)
