"""Fast decoding for the AV: the shared prompt prefix computed once, a static per-row cache, CUDA graphs; greedy or
sampled (temperature, top-k, top-p).

Every AV prompt of a batch is the same prompt with a different vector in one slot, so the positions before the slot
are identical in every row. `FastBackend` finds that shared prefix in the prompt embeddings it is given, computes
its keys and values once (batch 1) and keeps them while the prefix stays the same; each row then stores only its own
positions (the slot onward and the generated tokens) in a preallocated cache. Rows whose whole prompt equals the row
before them (the k samples of one vector, given consecutively) share that prefill too: their own positions are
computed once per vector and copied into each sample's cache. Attention reads the shared keys once per step for all
rows (cascade attention); on GPUs a Triton kernel does that attention in one pass (attention.py). One decode
step (all blocks, the final norm, lm_head, the token pick, EOS flags) is captured as a CUDA graph per batch size and
replayed; the host only advances a position counter and checks for EOS every few steps.

Greedy gives the tokens HF's `generate` gives (same EOS handling). Sampling draws from counter-based streams, one
per row key (sampling.py): a row's samples depend on (seed, its key, its prompt) alone, not on the batch. It
implements `nla.av.AVBackend`. Prompts of different lengths in one call, and sequences longer than a sliding window
(Gemma-3), go to the plain HFBackend it wraps. Llama-family and Gemma-3 bases (see blocks.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nla.av import HFBackend, SamplingParams
from nla.fast.attention import (
    cascade_attention,
    causal_attention,
    decode_attention,
    decode_kernel_available,
)
from nla.fast.blocks import Blocks
from nla.fast.sampling import compiled_sampler, key_tensor, sample_tokens

EOS_CHECK_EVERY = 16  # decode steps between host checks for "every row has ended"
Pick = tuple[int, float] | None  # how a step picks its token: None = argmax, else (top_k, top_p) sampling


def shared_prefix_length(embeds: torch.Tensor) -> int:
    """Leading positions identical in every row of (B, T, d), at most T - 1 (one position is always the row's)."""
    same = (embeds == embeds[:1]).all(-1).all(0)  # (T,)
    differs = (~same).nonzero()
    return min(int(differs[0]) if len(differs) else embeds.shape[1], embeds.shape[1] - 1)


def repeat_groups(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each run of equal consecutive rows, run index of every row) for rows (B, ...)."""
    B = rows.shape[0]
    starts = torch.ones(B, dtype=torch.bool, device=rows.device)
    if B > 1:
        starts[1:] = (rows[1:] != rows[:-1]).flatten(1).any(1)
    return starts.nonzero()[:, 0], starts.cumsum(0) - 1


@dataclass
class _Prefix:
    embeds: torch.Tensor  # (Lp, d)
    k: list[torch.Tensor]  # per block (Hkv, Lp, D)
    v: list[torch.Tensor]


class FastBackend:
    """AVBackend: greedy or sampled decoding with the shared prefix reused, a static cache and CUDA graphs (GPUs).

    graphs: capture decode steps as CUDA graphs (default: on for CUDA). kernel: decode attention by the Triton kernel
    (default: on for CUDA), which reads each row's keys only up to the current position, so one graph per batch size
    serves every step. Without it, the cache length a step attends to is rounded up to a multiple of `bucket`, so
    early steps read less; one graph per (batch size, bucket). refresh_prefix: recompute the shared prefix's keys
    on every call (in place, so graphs stay valid), for a model whose weights change between calls (GRPO)."""

    def __init__(self, model: Any, tokenizer: Any, eos_ids: set[int], *, fuse: bool | None = None,
                 graphs: bool | None = None, kernel: bool | None = None, bucket: int = 64,
                 refresh_prefix: bool = False) -> None:
        self.blocks = Blocks(model, fuse=fuse)
        self.lm_head = model.get_output_embeddings()
        self.fallback = HFBackend(model, tokenizer, eos_ids)
        self.pad_id = self.fallback.pad_id
        dev = self.blocks.device
        self.eos = torch.tensor(sorted(eos_ids) or [-1], device=dev)
        self.graphs = dev.type == "cuda" if graphs is None else graphs
        self.fused_sampler = dev.type == "cuda" if fuse is None else fuse
        self.kernel = dev.type == "cuda" and decode_kernel_available() if kernel is None else kernel
        self.bucket, self.refresh_prefix = bucket, refresh_prefix
        self._prefix: _Prefix | None = None
        self._cap = (0, 0)  # (rows, row positions) the buffers hold
        self._graphs: dict[tuple[int, int, Pick], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self.cos_t = self.sin_t = torch.empty(0, 0, device=dev)  # rotary tables for prefix + row positions
        self.inv_t = torch.ones(1, dtype=torch.float32, device=dev)  # 1 / temperature, read by captured steps

    # ---- the AVBackend API ---------------------------------------------------------------------------------------
    def generate(self, embeds: list[torch.Tensor], params: SamplingParams,
                 keys: Sequence[int | str] | None = None) -> list[tuple[list[int], bool]]:
        return [(toks, stop is None and len(toks) >= params.max_new_tokens)
                for toks, stop in self.generate_with_stops(embeds, params, keys)]

    @torch.inference_mode()
    def generate_with_stops(self, embeds: list[torch.Tensor], params: SamplingParams,
                            keys: Sequence[int | str] | None = None) -> list[tuple[list[int], int | None]]:
        """Per prompt: the new tokens before the stop token, and the stop token (None if cut at max_new_tokens).

        keys: one per prompt, naming its random stream with params.seed (nla.fast.sampling.sample_key); without
        them, a row's stream is its index in this call. A seed of None draws one from torch's generator."""
        if keys is not None and len(keys) != len(embeds):
            raise ValueError(f"keys: {len(keys)} for {len(embeds)} prompts; give one key per prompt.")
        if len({tuple(e.shape) for e in embeds}) != 1:
            return self.fallback.generate_with_stops(embeds, params)
        E = torch.stack(embeds).to(self.blocks.device, self.blocks.dtype)  # (B, T, d)
        B, T, _ = E.shape
        p = shared_prefix_length(E)
        window = self.blocks.min_window
        if window is not None and T + params.max_new_tokens - 1 > window:  # a local layer would drop early keys
            return self.fallback.generate_with_stops(embeds, params)
        pick: Pick = None
        words = None
        if not params.greedy:
            pick = (params.top_k, params.top_p)
            seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()))
            words = key_tensor(seed, keys if keys is not None else range(B), self.blocks.device)  # (B, 2)
            self.inv_t.fill_(1.0 / params.temperature)
        self._use_prefix(E[0, :p])
        uniq, group = repeat_groups(E[:, p:])
        n = self._decode(E[uniq, p:], group, params.max_new_tokens, pick, words)
        out = self.out[:B, :n].cpu().numpy()  # (B, n)
        is_eos = np.isin(out, self.eos.cpu().numpy())
        ended = is_eos.any(1)
        lengths = np.where(ended, is_eos.argmax(1), n)
        return [(out[r, :lengths[r]].tolist(), int(out[r, lengths[r]]) if ended[r] else None) for r in range(B)]

    # ---- prefix and buffers --------------------------------------------------------------------------------------
    def _use_prefix(self, embeds: torch.Tensor) -> None:
        """Keys and values of the shared prefix (Lp, d), computed once while the prefix stays the same."""
        old = self._prefix
        if old is not None and old.embeds.shape == embeds.shape and torch.equal(old.embeds, embeds) \
                and not self.refresh_prefix:
            return
        ks: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            ks.append(k[0].transpose(0, 1).contiguous())  # (Hkv, Lp, D)
            vs.append(v[0].transpose(0, 1).contiguous())
            return causal_attention(q, k, v, self.blocks.scale)

        Lp = embeds.shape[0]
        if Lp:
            cos, sin = self.blocks.rope_table(Lp)
            self.blocks.forward(embeds[None], cos, sin, attend)
        else:
            shape = (self.blocks.n_kv_heads, 0, self.blocks.head_dim)
            ks = vs = [embeds.new_zeros(shape) for _ in self.blocks.layers]
        if old is not None and old.embeds.shape == embeds.shape:  # same length: refill in place, graphs stay valid
            for dst, src in zip(old.k + old.v + [old.embeds], ks + vs + [embeds]):
                dst.copy_(src)
            return
        self._prefix = _Prefix(embeds.clone(), ks, vs)
        self.Lp = Lp
        self._drop_graphs()  # graphs read the prefix's tensors and its length

    def _ensure_buffers(self, rows: int, positions: int, max_new: int) -> None:
        if rows <= self._cap[0] and positions <= self._cap[1] and max_new <= self.out.shape[1]:
            return
        rows, positions = max(rows, self._cap[0]), max(positions, self._cap[1])
        b, dev = self.blocks, self.blocks.device
        self._drop_graphs()
        self.row_k = self.row_v = []  # free the old cache before allocating the new one
        shape = (rows, b.n_kv_heads, positions, b.head_dim)
        # zeros, not empty: masked positions still enter P @ V, and 0 * NaN from stale memory would poison it
        self.row_k = [torch.zeros(shape, dtype=b.dtype, device=dev) for _ in b.layers]
        self.row_v = [torch.zeros(shape, dtype=b.dtype, device=dev) for _ in b.layers]
        self.cur = torch.zeros(rows, dtype=torch.long, device=dev)  # the token each row feeds next
        self.out = torch.zeros((rows, max(max_new, getattr(self, "out", torch.empty(0, 0)).shape[1])),
                               dtype=torch.long, device=dev)
        self.done = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.words = torch.zeros((rows, 2), dtype=torch.long, device=dev)  # each row's random stream (sampling)
        self.t_buf = torch.zeros(1, dtype=torch.long, device=dev)  # row position the step writes
        self.ts_buf = torch.zeros(1, dtype=torch.long, device=dev)  # row position of the first generated token
        self.arange = torch.arange(positions, device=dev)
        self._cap = (rows, positions)

    # ---- prefill and decode --------------------------------------------------------------------------------------
    def _pick(self, logits: torch.Tensor, B: int, pick: Pick, index: torch.Tensor) -> torch.Tensor:
        """(B,) next tokens from logits (B, V): argmax, or a draw at token index `index` ((1,) int64)."""
        if pick is None:
            return logits.argmax(-1)
        sampler = compiled_sampler(*pick) if self.fused_sampler else sample_tokens
        kw = {} if self.fused_sampler else {"top_k": pick[0], "top_p": pick[1]}
        return sampler(logits, self.words[:B], index, self.inv_t, **kw)

    def _decode(self, suffix: torch.Tensor, group: torch.Tensor, max_new: int, pick: Pick,
                words: torch.Tensor | None) -> int:
        """Prefill each distinct row's suffix (U, Ts, d), copy it to the rows of its group (B,): row b is suffix
        group[b]; then decode; returns how many tokens were generated. words (B, 2): the rows' streams (sampling)."""
        U, Ts, _ = suffix.shape
        B = group.shape[0]
        Lr = Ts + max_new - 1  # row positions: the suffix and every generated token but the last
        self._ensure_buffers(B, Lr, max_new)
        if words is not None:
            self.words[:B] = words
        pre = self._prefix
        Lp = pre.embeds.shape[0]
        if self.cos_t.shape[1] < Lp + self._cap[1]:
            self.cos_t, self.sin_t = self.blocks.rope_table(Lp + self._cap[1])
            self._drop_graphs()  # graphs read the tables they were captured with
        cos_t, sin_t = self.cos_t, self.sin_t
        steps = [(Ts + s - 1) for s in range(1, max_new)]  # row position written by each decode step
        buckets = sorted({self._bucket(t) for t in steps})
        self.t_buf.zero_()
        self.ts_buf.zero_()
        if self.graphs:
            for Lb in buckets:  # capture before the prefill: warm-up runs scribble on the state the prefill resets
                self._graph(B, Lb, pick)
        self.ts_buf.fill_(Ts)
        causal = torch.ones(Ts, Ts, dtype=torch.bool, device=suffix.device).tril()

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # (U, Hkv, Ts, D)
            self.row_k[i][:B, :, :Ts] = k[group]
            self.row_v[i][:B, :, :Ts] = v[group]
            return cascade_attention(q, pre.k[i], pre.v[i], k, v, causal, self.blocks.scale)

        h = self.blocks.forward(suffix, cos_t[:, Lp:Lp + Ts].repeat(1, U, 1), sin_t[:, Lp:Lp + Ts].repeat(1, U, 1),
                                attend, final_norm=True)  # (U, Ts, d)
        first = self._pick(self.blocks.logits(self.lm_head, h[:, -1])[group], B, pick, self.t_buf)  # (B,)
        self.cur[:B] = first
        self.out[:B, 0] = first
        self.done[:B] = (first[:, None] == self.eos).any(-1)
        n = 1
        for t in steps:
            self.t_buf.fill_(t)
            if self.graphs:
                self._graphs[(B, self._bucket(t), pick)].replay()
            else:
                self._step(B, self._bucket(t), pick)
            n += 1
            if n % EOS_CHECK_EVERY == 0 and bool(self.done[:B].all()):
                break
        return n

    def _bucket(self, t: int) -> int:
        if self.kernel:
            return self._cap[1]
        return min(self._cap[1], -(-(t + 1) // self.bucket) * self.bucket)

    def _step(self, B: int, Lb: int, pick: Pick) -> None:
        """One step for rows [:B]: feed `cur` at row position t_buf, attend to positions < Lb, pick the next."""
        t = self.t_buf
        pre = self._prefix
        x = self.blocks.embed(self.cur[:B])[:, None]  # (B, 1, d)
        pos = t + self.Lp
        R = self.cos_t.shape[0]
        cos = self.cos_t.index_select(1, pos).expand(R, B, -1).contiguous()  # (R, B, D): all rows at one position
        sin = self.sin_t.index_select(1, pos).expand(R, B, -1).contiguous()
        mask = (self.arange[:Lb] <= t)[None]  # (1, Lb)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            rk, rv = self.row_k[i][:B], self.row_v[i][:B]
            rk.index_copy_(2, t, k.transpose(1, 2))
            rv.index_copy_(2, t, v.transpose(1, 2))
            if self.kernel:
                return decode_attention(q, pre.k[i], pre.v[i], rk, rv, t, self.blocks.scale)
            return cascade_attention(q, pre.k[i], pre.v[i], rk[:, :, :Lb], rv[:, :, :Lb], mask, self.blocks.scale)

        h = self.blocks.forward(x, cos, sin, attend, final_norm=True)  # (B, 1, d)
        index = t - self.ts_buf + 1  # (1,) the generated token's index: what a row's random stream counts
        nxt = self._pick(self.blocks.logits(self.lm_head, h[:, 0]), B, pick, index)  # (B,)
        self.cur[:B] = nxt
        self.out[:B].index_copy_(1, index, nxt[:, None])
        self.done[:B] |= (nxt[:, None] == self.eos).any(-1)

    def _drop_graphs(self) -> None:
        """Forget every captured graph and start a new memory pool: capturing into a pool whose graphs are all gone
        while a block of it is still alive trips an allocator assertion (seen with torch 2.11)."""
        self._graphs.clear()
        if self.graphs:
            self._pool = torch.cuda.graph_pool_handle()

    def _graph(self, B: int, Lb: int, pick: Pick) -> torch.cuda.CUDAGraph:
        key = (B, Lb, pick)
        if key not in self._graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up off the capture: compiles kernels, sizes cuBLAS workspaces
                self._step(B, Lb, pick)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._step(B, Lb, pick)
            self._graphs[key] = graph
        return self._graphs[key]


def sampling_backend(model: Any, tokenizer: Any, eos_ids: set[int], *, sharded: bool = False, fast: bool = True,
                     refresh_prefix: bool = False) -> Any:
    """The one place that picks the AV's in-process engine: FastBackend where it applies (fast asked for, the model
    on a GPU and not sharded, a family blocks.py runs), else transformers' HFBackend."""
    from nla.errors import NLAInputError
    from nla.fast.blocks import check_supported

    on_gpu = next(model.parameters()).device.type == "cuda"
    if fast and on_gpu and not sharded:
        try:
            check_supported(model.config)
        except NLAInputError:
            pass
        else:
            return FastBackend(model, tokenizer, eos_ids, refresh_prefix=refresh_prefix)
    return HFBackend(model, tokenizer, eos_ids, sharded=sharded)


class PaddedBackend:
    """Pads each batch to a power of two (at most `batch_size`, the pool's rows per call) by repeating its last
    prompt, so the fast backend captures a few CUDA graphs instead of one per batch size that bad rows leave. The
    padding rows repeat the last row (so they share its prefill) and draw from keys no row uses."""

    def __init__(self, backend: Any, batch_size: int) -> None:
        self.backend, self.batch_size = backend, batch_size

    def generate(self, embeds: list, params: Any, keys: Sequence[int | str] | None = None) -> list:
        n = len(embeds)
        if not n:
            return self.backend.generate(embeds, params, keys)
        rows = max(n, min(self.batch_size, 1 << (n - 1).bit_length()))
        pad_keys = None if keys is None else list(keys) + [f"\x00pad{i}" for i in range(rows - n)]
        return self.backend.generate(list(embeds) + [embeds[-1]] * (rows - n), params, pad_keys)[:n]
