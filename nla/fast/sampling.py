"""Sampling for the fast decode path: temperature, top-k and top-p over a counter-based random stream per row.

A row's random numbers are a pure function of (seed, row key, token index, vocabulary id): an integer hash, no
generator state. So a row's samples do not depend on its batch, its neighbours or the batch size, and the whole step
runs inside a CUDA graph (the token index lives on the device). The row key names what is sampled, for example
(act_id, sample index) through `sample_key`. The draw is the Gumbel-max trick: argmax(logits / T + G) with
G = -log(-log(u)) picks token v with probability softmax(logits / T)[v], among the tokens top-k and top-p keep.

This module knows nothing of models or caches (decode.py owns those). It does not reproduce torch's or
transformers' random streams: the plain path's samples differ from these, with the same distribution.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

MASK31 = 0x7FFFFFFF  # 31-bit words: every constant fits int32, as Triton wants literals, and no product overflows


def mix31(x: torch.Tensor) -> torch.Tensor:
    """A bijective 31-bit integer hash (xor-shift, multiply by odd constants mod 2**31) on int64 tensors holding
    values in [0, 2**31)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK31
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & MASK31
    return x ^ (x >> 16)


def row_key_words(seed: int, key: int | str) -> tuple[int, int]:
    """Two 31-bit words naming one row's random stream: a hash of (seed, key), stable across runs and machines."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    word = int.from_bytes(digest, "little")
    return word & MASK31, (word >> 32) & MASK31


def sample_key(act_id: Any, sample: int) -> str:
    """The row key of sample `sample` of activation `act_id`: what the labeling job and GRPO pass per row."""
    return f"{act_id}\x1e{sample}"


def key_tensor(seed: int, keys: Sequence[int | str], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 2) int64 words of each row's stream."""
    return torch.tensor([row_key_words(seed, k) for k in keys], dtype=torch.int64, device=device).view(-1, 2)


def uniforms(words: torch.Tensor, step: torch.Tensor, vocab: int) -> torch.Tensor:
    """(B, V) float32 in (0, 1): row b's draw for token index `step` ((1,) int64) at every vocabulary id."""
    k0, k1 = words[:, :1], words[:, 1:]  # (B, 1) each
    s = mix31(k1 ^ mix31(k0 ^ mix31(step.view(1, 1) & MASK31)))  # (B, 1): one word per row and token index
    v = torch.arange(vocab, device=words.device, dtype=torch.int64)[None]  # (1, V)
    x = mix31(mix31(s ^ mix31((v + 0x1E3779B9) & MASK31)) ^ k0)  # (B, V)
    return ((x >> 7).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def filter_logits(z: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Scaled logits z (B, V) fp32 with the tokens outside top-k, then outside top-p, set to -inf (as HF orders
    them). top_k 0 and top_p 1.0 keep everything; the most likely token is always kept."""
    if top_k > 0 and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]  # (B, 1)
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sz, order = torch.sort(z, dim=-1, descending=True)
        p = torch.softmax(sz, dim=-1)
        drop = (p.cumsum(-1) - p) >= top_p  # the probability mass before this token already reaches top_p
        z = z.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return z


def sample_tokens(logits: torch.Tensor, words: torch.Tensor, step: torch.Tensor, inv_temperature: torch.Tensor, *,
                  top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(B,) int64 tokens drawn from logits (B, V) at token index `step` ((1,) int64 device tensor), each row from
    its own stream `words` (B, 2); inv_temperature (1,) float32. Every input is a tensor, so a CUDA graph that
    captured this call serves every step, seed and temperature."""
    z = filter_logits(logits.float() * inv_temperature, top_k, top_p)  # (B, V)
    gumbel = -torch.log(-torch.log(uniforms(words, step, logits.shape[-1])))
    return (z + gumbel).argmax(-1)


@functools.cache
def compiled_sampler(top_k: int, top_p: float) -> Callable[..., torch.Tensor]:
    """sample_tokens fused by torch.compile for GPUs (the hash, the noise and the argmax in few kernels)."""
    fn = torch.compile(functools.partial(sample_tokens, top_k=top_k, top_p=top_p), fullgraph=True, dynamic=True)
    return fn
