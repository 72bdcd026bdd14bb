"""Fast greedy decoding for the AV: the shared prompt prefix computed once, a static per-row cache, CUDA graphs.

Every AV prompt of a batch is the same prompt with a different vector in one slot, so the positions before the slot
are identical in every row. `FastGreedyBackend` finds that shared prefix in the prompt embeddings it is given,
computes its keys and values once (batch 1) and keeps them while the prefix stays the same; each row then stores
only its own positions (the slot onward and the generated tokens) in a preallocated cache. Attention reads the
shared keys once per step for all rows (cascade attention) instead of once per row. On GPUs a Triton kernel does
that attention in one pass (fast_attention.py). One decode step (all blocks, the final norm, lm_head, argmax, EOS
flags) is captured as a CUDA graph per batch size and replayed; the host only advances a position counter and
checks for EOS every few steps.

It implements `nla.av.AVBackend` and gives the tokens HF's `generate` gives (greedy, same EOS handling). Sampling,
and prompts of different lengths in one call, go to the plain HFBackend it wraps. Llama-family bases only (see
fast_blocks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nla.av import HFBackend, SamplingParams
from nla.fast_attention import causal_attention, cascade_attention, decode_attention, decode_kernel_available
from nla.fast_blocks import Blocks

EOS_CHECK_EVERY = 16  # decode steps between host checks for "every row has ended"


def shared_prefix_length(embeds: torch.Tensor) -> int:
    """Leading positions identical in every row of (B, T, d), at most T - 1 (one position is always the row's)."""
    same = (embeds == embeds[:1]).all(-1).all(0)  # (T,)
    differs = (~same).nonzero()
    return min(int(differs[0]) if len(differs) else embeds.shape[1], embeds.shape[1] - 1)


@dataclass
class _Prefix:
    embeds: torch.Tensor  # (Lp, d)
    k: list[torch.Tensor]  # per block (Hkv, Lp, D)
    v: list[torch.Tensor]


class FastGreedyBackend:
    """AVBackend: greedy decoding with the shared prefix reused, a static cache and CUDA graphs (on GPUs).

    graphs: capture decode steps as CUDA graphs (default: on for CUDA). kernel: decode attention by the Triton kernel
    (default: on for CUDA), which reads each row's keys only up to the current position, so one graph per batch size
    serves every step. Without it, the cache length a step attends to is rounded up to a multiple of `bucket`, so
    early steps read less; one graph per (batch size, bucket)."""

    def __init__(self, model: Any, tokenizer: Any, eos_ids: set[int], *, fuse: bool | None = None,
                 graphs: bool | None = None, kernel: bool | None = None, bucket: int = 64) -> None:
        self.blocks = Blocks(model, fuse=fuse)
        self.lm_head = model.get_output_embeddings()
        self.fallback = HFBackend(model, tokenizer, eos_ids)
        dev = self.blocks.device
        self.eos = torch.tensor(sorted(eos_ids) or [-1], device=dev)
        self.graphs = dev.type == "cuda" if graphs is None else graphs
        self.kernel = dev.type == "cuda" and decode_kernel_available() if kernel is None else kernel
        self.bucket = bucket
        self._prefix: _Prefix | None = None
        self._cap = (0, 0)  # (rows, row positions) the buffers hold
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self.cos_t = self.sin_t = torch.empty(0, device=dev)  # rotary tables for prefix + row positions

    # ---- the AVBackend API ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, embeds: list[torch.Tensor], params: SamplingParams) -> list[tuple[list[int], bool]]:
        if not params.greedy or len({tuple(e.shape) for e in embeds}) != 1:
            return self.fallback.generate(embeds, params)
        E = torch.stack(embeds).to(self.blocks.device, self.blocks.dtype)  # (B, T, d)
        B, T, _ = E.shape
        p = shared_prefix_length(E)
        self._use_prefix(E[0, :p])
        n = self._decode(E[:, p:], params.max_new_tokens)
        out = self.out[:B, :n].cpu().numpy()  # (B, n)
        is_eos = np.isin(out, self.eos.cpu().numpy())
        ended = is_eos.any(1)
        lengths = np.where(ended, is_eos.argmax(1), n)
        return [(out[r, :lengths[r]].tolist(), bool(not ended[r] and lengths[r] >= params.max_new_tokens))
                for r in range(B)]

    # ---- prefix and buffers --------------------------------------------------------------------------------------
    def _use_prefix(self, embeds: torch.Tensor) -> None:
        """Keys and values of the shared prefix (Lp, d), computed once while the prefix stays the same."""
        old = self._prefix
        if old is not None and old.embeds.shape == embeds.shape and torch.equal(old.embeds, embeds):
            return
        ks: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            ks.append(k[0].transpose(0, 1).contiguous())  # (Hkv, Lp, D)
            vs.append(v[0].transpose(0, 1).contiguous())
            return causal_attention(q, k, v, self.blocks.scale)

        Lp = embeds.shape[0]
        if Lp:
            self.blocks.forward(embeds[None], *self.blocks.rope_table(Lp), attend)
        else:
            shape = (self.blocks.n_kv_heads, 0, self.blocks.head_dim)
            ks = vs = [embeds.new_zeros(shape) for _ in self.blocks.layers]
        self._prefix = _Prefix(embeds.clone(), ks, vs)
        self.Lp = Lp
        self._graphs.clear()  # graphs read the prefix's tensors and its length

    def _ensure_buffers(self, rows: int, positions: int, max_new: int) -> None:
        if rows <= self._cap[0] and positions <= self._cap[1] and max_new <= self.out.shape[1]:
            return
        rows, positions = max(rows, self._cap[0]), max(positions, self._cap[1])
        b, dev = self.blocks, self.blocks.device
        self._graphs.clear()
        self.row_k = self.row_v = []  # free the old cache before allocating the new one
        shape = (rows, b.n_kv_heads, positions, b.head_dim)
        # zeros, not empty: masked positions still enter P @ V, and 0 * NaN from stale memory would poison it
        self.row_k = [torch.zeros(shape, dtype=b.dtype, device=dev) for _ in b.layers]
        self.row_v = [torch.zeros(shape, dtype=b.dtype, device=dev) for _ in b.layers]
        self.cur = torch.zeros(rows, dtype=torch.long, device=dev)  # the token each row feeds next
        self.out = torch.zeros((rows, max(max_new, getattr(self, "out", torch.empty(0, 0)).shape[1])),
                               dtype=torch.long, device=dev)
        self.done = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.t_buf = torch.zeros(1, dtype=torch.long, device=dev)  # row position the step writes
        self.ts_buf = torch.zeros(1, dtype=torch.long, device=dev)  # row position of the first generated token
        self.arange = torch.arange(positions, device=dev)
        self._cap = (rows, positions)

    # ---- prefill and decode --------------------------------------------------------------------------------------
    def _decode(self, suffix: torch.Tensor, max_new: int) -> int:
        """Prefill each row's suffix (B, Ts, d), then decode greedily; returns how many tokens were generated."""
        B, Ts, _ = suffix.shape
        Lr = Ts + max_new - 1  # row positions: the suffix and every generated token but the last
        self._ensure_buffers(B, Lr, max_new)
        pre = self._prefix
        Lp = pre.embeds.shape[0]
        if self.cos_t.shape[0] < Lp + self._cap[1]:
            self.cos_t, self.sin_t = self.blocks.rope_table(Lp + self._cap[1])
            self._graphs.clear()  # graphs read the tables they were captured with
        cos_t, sin_t = self.cos_t, self.sin_t
        steps = [(Ts + s - 1) for s in range(1, max_new)]  # row position written by each decode step
        buckets = sorted({self._bucket(t) for t in steps})
        self.t_buf.zero_()
        self.ts_buf.zero_()
        if self.graphs:
            for Lb in buckets:  # capture before the prefill: warm-up runs scribble on the state the prefill resets
                self._graph(B, Lb)
        self.ts_buf.fill_(Ts)
        causal = torch.ones(Ts, Ts, dtype=torch.bool, device=suffix.device).tril()

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            rk, rv = self.row_k[i][:B], self.row_v[i][:B]
            rk[:, :, :Ts] = k.transpose(1, 2)
            rv[:, :, :Ts] = v.transpose(1, 2)
            return cascade_attention(q, pre.k[i], pre.v[i], rk[:, :, :Ts], rv[:, :, :Ts], causal, self.blocks.scale)

        h = self.blocks.forward(suffix, cos_t[Lp:Lp + Ts].repeat(B, 1), sin_t[Lp:Lp + Ts].repeat(B, 1), attend,
                                final_norm=True)  # (B, Ts, d)
        first = self.lm_head(h[:, -1]).argmax(-1)  # (B,)
        self.cur[:B] = first
        self.out[:B, 0] = first
        self.done[:B] = (first[:, None] == self.eos).any(-1)
        n = 1
        for t in steps:
            self.t_buf.fill_(t)
            if self.graphs:
                self._graphs[(B, self._bucket(t))].replay()
            else:
                self._step(B, self._bucket(t))
            n += 1
            if n % EOS_CHECK_EVERY == 0 and bool(self.done[:B].all()):
                break
        return n

    def _bucket(self, t: int) -> int:
        if self.kernel:
            return self._cap[1]
        return min(self._cap[1], -(-(t + 1) // self.bucket) * self.bucket)

    def _step(self, B: int, Lb: int) -> None:
        """One greedy step for rows [:B]: feed `cur` at row position t_buf, attend to positions < Lb."""
        t = self.t_buf
        pre = self._prefix
        x = self.blocks.embed(self.cur[:B])[:, None]  # (B, 1, d)
        pos = t + self.Lp
        cos = self.cos_t.index_select(0, pos).expand(B, -1).contiguous()  # (B, D): every row at the same position
        sin = self.sin_t.index_select(0, pos).expand(B, -1).contiguous()
        mask = (self.arange[:Lb] <= t)[None]  # (1, Lb)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            rk, rv = self.row_k[i][:B], self.row_v[i][:B]
            rk.index_copy_(2, t, k.transpose(1, 2))
            rv.index_copy_(2, t, v.transpose(1, 2))
            if self.kernel:
                return decode_attention(q, pre.k[i], pre.v[i], rk, rv, t, self.blocks.scale)
            return cascade_attention(q, pre.k[i], pre.v[i], rk[:, :, :Lb], rv[:, :, :Lb], mask, self.blocks.scale)

        h = self.blocks.forward(x, cos, sin, attend, final_norm=True)  # (B, 1, d)
        nxt = self.lm_head(h[:, 0]).argmax(-1)  # (B,)
        self.cur[:B] = nxt
        self.out[:B].index_copy_(1, t - self.ts_buf + 1, nxt[:, None])
        self.done[:B] |= (nxt[:, None] == self.eos).any(-1)

    def _graph(self, B: int, Lb: int) -> torch.cuda.CUDAGraph:
        key = (B, Lb)
        if key not in self._graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up off the capture: compiles kernels, sizes cuBLAS workspaces
                self._step(B, Lb)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._step(B, Lb)
            self._graphs[key] = graph
        return self._graphs[key]
