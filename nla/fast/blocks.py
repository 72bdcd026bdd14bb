"""Our forward through the blocks of a decoder (Llama, Qwen2, Mistral, Gemma-3) over the model's own modules.

It computes what transformers' eager forward computes, op for op and in the same dtypes, without the per-call
machinery (mask building, cache objects, output records), and leaves attention to its callers: prefill.py
(causal, no cache) and decode.py (a shared prefix plus a static per-row cache). On a GPU the elementwise steps
(residual add + RMSNorm, rotary, the gated activation) are fused by torch.compile; on a CPU they run eagerly. Nothing
is copied or converted: the projections, norms and weights are the model's.

Gemma-3 differs from Llama in ways this file handles: RMSNorm scales by (1 + w) in fp32, each block has four norms
(before and after attention and MLP), q and k are RMS-normed per head, the MLP is GELU-tanh gated, the embedding layer
multiplies by sqrt(d) (the model's own layer does it), and layers are either global or sliding-window, each kind with
its own rotary table. Sliding windows are the callers' to honour (`Blocks.window`). It does not run Gemma-2-style
soft-capped attention logits, bidirectional attention or Mistral's sliding window: those stay on the plain path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nla import hf
from nla.errors import NLAInputError

SUPPORTED_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral", "gemma3_text"})
ACTIVATIONS = {"llama": "silu", "qwen2": "silu", "mistral": "silu", "gemma3_text": "gelu_pytorch_tanh"}

# attend(block_index, q, k, v) -> (B, T, Hq * D); q (B, T, Hq, D), k and v (B, T, Hkv, D), rotary applied.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Llama/Qwen2 compute it: statistics in fp32, the weight applied after casting back."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def gemma_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Gemma-3 computes it: everything in fp32, scaled by (1 + w), cast back last."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * (1.0 + weight.float())).to(x.dtype)


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(h + delta, rms_norm(h + delta)): the residual add and the next norm in one pass."""
    h = h + delta
    return h, rms_norm(h, weight, eps)


def gemma_add_rms_norm(h: torch.Tensor, delta: torch.Tensor, out_weight: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma-3's sublayer end: (h + norm_out(delta), norm_next(h + norm_out(delta))) in one pass."""
    h = h + gemma_rms_norm(delta, out_weight, eps)
    return h, gemma_rms_norm(h, weight, eps)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half form. x (N, H, D); cos and sin (N, D): each token's row."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def rotary_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
              sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rotary(q, cos, sin), rotary(k, cos, sin)


def gemma_norm_rotary_qk(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                         eps: float, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma-3's per-head q/k RMSNorm, then rotary. q (N, Hq, D), k (N, Hkv, D)."""
    return rotary(gemma_rms_norm(q, q_weight, eps), cos, sin), rotary(gemma_rms_norm(k, k_weight, eps), cos, sin)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def gelu_tanh_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.gelu(gate, approximate="tanh") * up


ELEMENTWISE = {"rms_norm": rms_norm, "add_rms_norm": add_rms_norm, "rotary_qk": rotary_qk, "silu_mul": silu_mul,
               "gemma_rms_norm": gemma_rms_norm, "gemma_add_rms_norm": gemma_add_rms_norm,
               "gemma_norm_rotary_qk": gemma_norm_rotary_qk, "gelu_tanh_mul": gelu_tanh_mul}


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
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", "?")
    mistral_window = kind == "mistral" and getattr(cfg, "sliding_window", None) is not None
    gemma_extras = getattr(cfg, "attn_logit_softcapping", None) is not None \
        or bool(getattr(cfg, "use_bidirectional_attention", False))
    allowed_layers = {"full_attention", "sliding_attention"} if kind == "gemma3_text" else {"full_attention"}
    if kind not in SUPPORTED_MODEL_TYPES or not layer_types <= allowed_layers or mistral_window or gemma_extras \
            or act != ACTIVATIONS[kind]:
        raise NLAInputError(
            f"model_type {kind!r} (layer types {sorted(layer_types)}, act {act}): the fast path runs "
            f"{sorted(SUPPORTED_MODEL_TYPES)} with their own activations (SiLU; GELU-tanh for Gemma-3) and no logit "
            "soft-capping. Fix: use the plain path (nla.extract.Extractor, nla.av.HFBackend, nla.ar.ARModel) for "
            "this base."
        )
    return cfg


class Blocks:
    """The first `n_blocks` decoder blocks of a causal LM, run by our loop. `fuse` (default: on for CUDA) fuses the
    elementwise steps with torch.compile.

    window[i]: the sliding window of block i (keys at distance < window; None = global), for the callers'
    attention. Rotary tables have one row per rotary kind (Gemma-3: global and local), block i reads row rope_of[i]."""

    def __init__(self, model: Any, n_blocks: int | None = None, *, fuse: bool | None = None) -> None:
        cfg = check_supported(model.config)
        self.gemma = cfg.model_type == "gemma3_text"
        self.inner = hf.decoder(model)
        n = len(self.inner.layers) if n_blocks is None else n_blocks
        if not 1 <= n <= len(self.inner.layers):
            raise NLAInputError(f"n_blocks {n}: the model has {len(self.inner.layers)} blocks. Fix: 1..that.")
        self.layers = list(self.inner.layers)[:n]
        self.embed = self.inner.embed_tokens  # Gemma-3's layer multiplies by sqrt(d) itself
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        self.scale = attn.scaling
        self.d_model = cfg.hidden_size
        types = list(getattr(cfg, "layer_types", None) or ["full_attention"] * len(self.inner.layers))[:n]
        self.rope_kinds = sorted(set(types)) if self.gemma else ["full_attention"]
        self.rope_of = [self.rope_kinds.index(t) if self.gemma else 0 for t in types]
        self.window: list[int | None] = [cfg.sliding_window if t == "sliding_attention" else None for t in types]
        self.final_logit_softcap: float | None = getattr(cfg, "final_logit_softcapping", None)
        fuse = self.device.type == "cuda" if fuse is None else fuse
        self._op = {k: _compiled(k) if fuse else fn for k, fn in ELEMENTWISE.items()}

    @property
    def min_window(self) -> int | None:
        """The smallest sliding window among the blocks (None: every block is global)."""
        return min((w for w in self.window if w is not None), default=None)

    @torch.inference_mode()
    def rope_table(self, n_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (R, n_positions, D) in the model's dtype, one row per rotary kind, from the model's own
        rotary module."""
        pos = torch.arange(n_positions, device=self.device)[None]  # (1, P)
        probe = torch.empty(0, dtype=self.dtype, device=self.device)
        tables = [self.inner.rotary_emb(probe, pos, kind) if self.gemma else self.inner.rotary_emb(probe, pos)
                  for kind in self.rope_kinds]
        return torch.stack([c[0] for c, _ in tables]), torch.stack([s[0] for _, s in tables])

    def logits(self, lm_head: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        """lm_head(h), soft-capped where the model caps its final logits."""
        out = lm_head(h)
        cap = self.final_logit_softcap
        return out if cap is None else torch.tanh(out / cap) * cap

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend, *,
                final_norm: bool = False) -> torch.Tensor:
        """h (B, T, d) input embeddings -> (B, T, d) output of the last block (after the model's final norm when
        final_norm). cos and sin (R, B * T, D): each token's rotary row per rotary kind, tokens in row-major order."""
        if self.gemma:
            return self._forward_gemma(h, cos, sin, attend, final_norm)
        op = self._op
        B, T, d = h.shape
        N, D = B * T, self.head_dim
        h = h.reshape(N, d)  # tokens flattened: the fused kernels see one dynamic dimension
        first = self.layers[0].input_layernorm
        x = op["rms_norm"](h, first.weight, first.variance_epsilon)
        for i, layer in enumerate(self.layers):
            a = layer.self_attn
            q, k = op["rotary_qk"](a.q_proj(x).view(N, self.n_heads, D), a.k_proj(x).view(N, self.n_kv_heads, D),
                                   cos[0], sin[0])
            v = a.v_proj(x).view(B, T, self.n_kv_heads, D)
            o = attend(i, q.view(B, T, self.n_heads, D), k.view(B, T, self.n_kv_heads, D), v).view(N, -1)
            norm = layer.post_attention_layernorm
            h, x = op["add_rms_norm"](h, a.o_proj(o), norm.weight, norm.variance_epsilon)
            m = layer.mlp
            delta = m.down_proj(op["silu_mul"](m.gate_proj(x), m.up_proj(x)))
            if i + 1 < len(self.layers):
                norm = self.layers[i + 1].input_layernorm
            elif final_norm:
                norm = self.inner.norm
            else:
                return (h + delta).view(B, T, d)
            h, x = op["add_rms_norm"](h, delta, norm.weight, norm.variance_epsilon)
        return x.view(B, T, d)

    def _forward_gemma(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend,
                       final_norm: bool) -> torch.Tensor:
        """Gemma-3's block: norm -> attention (q/k normed) -> norm, add; norm -> GELU-tanh MLP -> norm, add."""
        op = self._op
        B, T, d = h.shape
        N, D = B * T, self.head_dim
        h = h.reshape(N, d)
        first = self.layers[0].input_layernorm
        x = op["gemma_rms_norm"](h, first.weight, first.eps)
        for i, layer in enumerate(self.layers):
            a, r = layer.self_attn, self.rope_of[i]
            q, k = op["gemma_norm_rotary_qk"](a.q_proj(x).view(N, self.n_heads, D),
                                              a.k_proj(x).view(N, self.n_kv_heads, D), a.q_norm.weight,
                                              a.k_norm.weight, a.q_norm.eps, cos[r], sin[r])
            v = a.v_proj(x).view(B, T, self.n_kv_heads, D)
            o = attend(i, q.view(B, T, self.n_heads, D), k.view(B, T, self.n_kv_heads, D), v).view(N, -1)
            pre = layer.pre_feedforward_layernorm
            h, x = op["gemma_add_rms_norm"](h, a.o_proj(o), layer.post_attention_layernorm.weight, pre.weight,
                                            pre.eps)
            m = layer.mlp
            delta = m.down_proj(op["gelu_tanh_mul"](m.gate_proj(x), m.up_proj(x)))
            post = layer.post_feedforward_layernorm
            if i + 1 < len(self.layers):
                norm = self.layers[i + 1].input_layernorm
            elif final_norm:
                norm = self.inner.norm
            else:
                return (h + op["gemma_rms_norm"](delta, post.weight, post.eps)).view(B, T, d)
            h, x = op["gemma_add_rms_norm"](h, delta, post.weight, norm.weight, norm.eps)
        return x.view(B, T, d)
