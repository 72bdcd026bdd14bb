"""Our forward through the blocks of a Llama-family decoder (Llama, Qwen2, Mistral) over the model's own modules.

It computes what transformers' eager forward computes, op for op and in the same dtypes, without the per-call
machinery (mask building, cache objects, output records), and leaves attention to its callers: fast_prefill.py
(causal, no cache) and fast_decode.py (a shared prefix plus a static per-row cache). On a GPU the elementwise steps
(residual add + RMSNorm, rotary, SiLU x up) are fused by torch.compile; on a CPU they run eagerly. Nothing is copied
or converted: the projections, norms and weights are the model's. Gemma-3 (scaled embeddings, q/k norms, sliding
windows) is not supported: it stays on the plain path (nla.extract, nla.av.HFBackend, nla.ar.ARModel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nla import hf
from nla.errors import NLAInputError

SUPPORTED_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral"})

# attend(block_index, q, k, v) -> (B, T, Hq * D); q (B, T, Hq, D), k and v (B, T, Hkv, D), rotary applied.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Llama/Qwen2 compute it: statistics in fp32, the weight applied after casting back."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(h + delta, rms_norm(h + delta)): the residual add and the next norm in one pass."""
    h = h + delta
    return h, rms_norm(h, weight, eps)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half form. x (N, H, D); cos and sin (N, D): each token's row."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def rotary_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
              sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rotary(q, cos, sin), rotary(k, cos, sin)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


ELEMENTWISE = {"rms_norm": rms_norm, "add_rms_norm": add_rms_norm, "rotary_qk": rotary_qk, "silu_mul": silu_mul}


@functools.cache
def _compiled(name: str) -> Callable:
    """ELEMENTWISE[name] fused by torch.compile. Only the token dimension (dim 0) is dynamic: head counts and widths
    stay constants, which keeps the kernels' index arithmetic cheap. emulate_precision_casts rounds where eager
    rounds, so fused results stay those of the plain path."""
    fn = torch.compile(ELEMENTWISE[name], fullgraph=True, options={"emulate_precision_casts": True})

    def call(*args: Any) -> Any:
        for a in args:
            if isinstance(a, torch.Tensor) and a.dim() > 1:
                torch._dynamo.maybe_mark_dynamic(a, 0)
        return fn(*args)

    return call


def check_supported(config: Any) -> Any:
    """The text config, if the fast path can run this architecture; else an error that names the fallback."""
    cfg = config.get_text_config()
    kind = getattr(cfg, "model_type", "?")
    layer_types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    sliding = kind == "mistral" and getattr(cfg, "sliding_window", None) is not None
    if kind not in SUPPORTED_MODEL_TYPES or layer_types != {"full_attention"} or sliding \
            or getattr(cfg, "hidden_act", "silu") != "silu":
        raise NLAInputError(
            f"model_type {kind!r} (layer types {sorted(layer_types)}, act {getattr(cfg, 'hidden_act', '?')}): the fast "
            f"path runs {sorted(SUPPORTED_MODEL_TYPES)} with full attention and SiLU only. Fix: use the plain path "
            "(nla.extract.Extractor, nla.av.HFBackend, nla.ar.ARModel) for this base."
        )
    return cfg


class Blocks:
    """The first `n_blocks` decoder blocks of a causal LM, run by our loop. `fuse` (default: on for CUDA) fuses the
    elementwise steps with torch.compile."""

    def __init__(self, model: Any, n_blocks: int | None = None, *, fuse: bool | None = None) -> None:
        cfg = check_supported(model.config)
        self.inner = hf.decoder(model)
        n = len(self.inner.layers) if n_blocks is None else n_blocks
        if not 1 <= n <= len(self.inner.layers):
            raise NLAInputError(f"n_blocks {n}: the model has {len(self.inner.layers)} blocks. Fix: 1..that.")
        self.layers = list(self.inner.layers)[:n]
        self.embed = self.inner.embed_tokens
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        self.scale = attn.scaling
        self.d_model = cfg.hidden_size
        fuse = self.device.type == "cuda" if fuse is None else fuse
        ops = {k: _compiled(k) if fuse else fn for k, fn in ELEMENTWISE.items()}
        self._rms, self._add_rms, self._rotary_qk, self._silu_mul = (ops[k] for k in ELEMENTWISE)

    @torch.inference_mode()
    def rope_table(self, n_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (n_positions, D) in the model's dtype, from the model's own rotary module."""
        pos = torch.arange(n_positions, device=self.device)[None]  # (1, P)
        probe = torch.empty(0, dtype=self.dtype, device=self.device)
        cos, sin = self.inner.rotary_emb(probe, pos)
        return cos[0], sin[0]

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend, *,
                final_norm: bool = False) -> torch.Tensor:
        """h (B, T, d) input embeddings -> (B, T, d) output of the last block (after the model's final norm when
        final_norm). cos and sin (B * T, D): each token's rotary row, tokens in row-major (B, T) order."""
        B, T, d = h.shape
        N, D = B * T, self.head_dim
        h = h.reshape(N, d)  # tokens flattened: the fused kernels see one dynamic dimension
        first = self.layers[0].input_layernorm
        x = self._rms(h, first.weight, first.variance_epsilon)
        for i, layer in enumerate(self.layers):
            a = layer.self_attn
            q, k = self._rotary_qk(a.q_proj(x).view(N, self.n_heads, D), a.k_proj(x).view(N, self.n_kv_heads, D),
                                   cos, sin)
            v = a.v_proj(x).view(B, T, self.n_kv_heads, D)
            o = attend(i, q.view(B, T, self.n_heads, D), k.view(B, T, self.n_kv_heads, D), v).view(N, -1)
            norm = layer.post_attention_layernorm
            h, x = self._add_rms(h, a.o_proj(o), norm.weight, norm.variance_epsilon)
            m = layer.mlp
            delta = m.down_proj(self._silu_mul(m.gate_proj(x), m.up_proj(x)))
            if i + 1 < len(self.layers):
                norm = self.layers[i + 1].input_layernorm
            elif final_norm:
                norm = self.inner.norm
            else:
                return (h + delta).view(B, T, d)
            h, x = self._add_rms(h, delta, norm.weight, norm.variance_epsilon)
        return x.view(B, T, d)
