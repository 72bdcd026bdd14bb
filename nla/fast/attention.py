"""Attention for the fast path: causal prefill (SDPA), cascade attention over a shared prefix (torch), and a Triton
decode kernel for the same cascade at one query per row (GPUs).

The AV's rows share their prompt prefix, stored once as (Hkv, Lp, D); each row keeps only its own keys after it.
`cascade_attention` is the reference math (any device, any number of queries) and serves the AV's suffix prefill;
`decode_attention` does one decode step in one kernel per block: each program takes a few rows and one key head, reads
the shared prefix (L2-resident, it is the same for every program) and that row's keys up to the current position
once, with an online softmax in fp32. The position is read from device memory, so one CUDA graph serves every step.
This module holds no caches and knows nothing of models.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     window: int | None = None) -> torch.Tensor:
    """Causal self-attention: q (B, T, Hq, D), k and v (B, T, Hkv, D) -> (B, T, Hq * D).

    Rows are right padded, so a real token never sees a pad and SDPA can take its flash kernel. With a sliding
    `window` shorter than T, each query sees only the keys at distance < window (an explicit mask, slower)."""
    B, T, Hq, D = q.shape
    mask = None
    if window is not None and T > window:
        pos = torch.arange(T, device=q.device)
        dist = pos[:, None] - pos[None]  # (T, T) query - key
        mask = (dist >= 0) & (dist < window)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, is_causal=mask is None, scale=scale,
                                         enable_gqa=k.shape[2] != Hq)  # (B, Hq, T, D)
    return out.transpose(1, 2).reshape(B, T, Hq * D)


def cascade_attention(q: torch.Tensor, shared_k: torch.Tensor, shared_v: torch.Tensor, row_k: torch.Tensor,
                      row_v: torch.Tensor, row_mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention over a prefix shared by all rows plus each row's own keys.

    q (B, Tq, Hq, D); shared_k, shared_v (Hkv, Lp, D), stored once; row_k, row_v (B, Hkv, Lr, D); row_mask (Tq, Lr)
    bool: which of its row's keys each query sees (every query sees the whole prefix). Returns (B, Tq, Hq * D).
    Scores in the model dtype and softmax in fp32, as transformers' eager attention computes them."""
    B, Tq, Hq, D = q.shape
    Hkv, Lp = shared_k.shape[:2]
    Lr = row_k.shape[2]
    G = Hq // Hkv  # query heads per key head: head h reads key head h // G
    M = G * Tq
    qg = q.view(B, Tq, Hkv, G, D).permute(2, 0, 3, 1, 4)  # (Hkv, B, G, Tq, D)
    s_shared = torch.bmm(qg.reshape(Hkv, B * M, D), shared_k.transpose(1, 2))  # (Hkv, B*M, Lp)
    s_rows = torch.bmm(qg.transpose(0, 1).reshape(B * Hkv, M, D), row_k.reshape(B * Hkv, Lr, D).transpose(1, 2))
    s_rows = s_rows.view(B, Hkv, M, Lr).masked_fill(~row_mask.repeat(G, 1), float("-inf"))
    scores = torch.cat([s_shared.view(Hkv, B, M, Lp).transpose(0, 1), s_rows], dim=-1) * scale  # (B, Hkv, M, L)
    p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.bmm(p[..., Lp:].reshape(B * Hkv, M, Lr), row_v.reshape(B * Hkv, Lr, D)).view(B, Hkv, M, D)
    p_shared = p[..., :Lp].transpose(0, 1).reshape(Hkv, B * M, Lp)
    out = out + torch.bmm(p_shared, shared_v).view(Hkv, B, M, D).transpose(0, 1)
    return out.view(B, Hkv, G, Tq, D).permute(0, 3, 1, 2, 4).reshape(B, Tq, Hq * D)


@functools.cache
def decode_kernel_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def _kernel():
    from nla.fast.attention_triton import decode_kernel  # Triton only where decode runs on a GPU

    return decode_kernel


def decode_attention(q: torch.Tensor, shared_k: torch.Tensor, shared_v: torch.Tensor, row_k: torch.Tensor,
                     row_v: torch.Tensor, t: torch.Tensor, scale: float,
                     config: dict[str, int] | None = None) -> torch.Tensor:
    """One decode step: q (B, 1, Hq, D) sees the whole shared prefix (Hkv, Lp, D) and its row's keys at positions
    0..t of row_k, row_v (B, Hkv, L, D); t is a one-element int64 device tensor. Returns (B, 1, Hq * D).
    cascade_attention's result, computed in one pass (fp32 scores, probabilities in the model dtype for P @ V).
    config: the kernel's tiling (decode_config's keys); default decode_config for these shapes."""
    B, _, Hq, D = q.shape
    Hkv, Lp = shared_k.shape[:2]
    assert q.is_contiguous() and shared_k.is_contiguous() and shared_v.is_contiguous()
    assert row_k.stride() == row_v.stride() and row_k.stride(-1) == 1
    out = torch.empty((B, 1, Hq * D), dtype=q.dtype, device=q.device)
    G = Hq // Hkv
    cfg = dict(config or decode_config(D, G, q.element_size()))
    rows = cfg.pop("ROWS")
    _kernel()[(-(-B // rows), Hkv)](q, shared_k, shared_v, row_k, row_v, out, t, B, Lp, scale,
                                    q.stride(0), shared_k.stride(0), shared_k.stride(1),
                                    row_k.stride(0), row_k.stride(1), row_k.stride(2), out.stride(0),
                                    G=G, GP=max(16, _next_pow2(rows * G)), ROWS=rows, D=D,
                                    IEEE=q.dtype == torch.float32, **cfg)
    return out


def decode_config(D: int, G: int, element_size: int) -> dict[str, int]:
    """The decode kernel's tiling for head width D, G query heads per key head and the element size in bytes:
    ROWS rows per program (they read the shared prefix once together), BLOCK keys per tile, and Triton's
    num_warps / num_stages where the default does not fit. 64-key tiles for rows of <= 512 bytes (bf16 D <= 256,
    fp32 D <= 128); fp32 D = 256 (the exact checks of Gemma-3-12B) needs 32 keys and 2 stages (H100: 227 KiB)."""
    row_bytes = D * element_size
    if row_bytes > 512:
        return {"ROWS": 1, "BLOCK": 32, "num_stages": 2}
    return {"ROWS": 1, "BLOCK": 64}


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()
