"""Injection: put an activation vector in place of the marker token's input embedding.

Pure tensor math plus input checks on vectors. It knows nothing of prompts' text (prompt.py) or of generation
(av.py). The injected row is `v * injection_scale / ||v||` with the norm taken in fp32; the model's own embedding
scale (Gemma-3 multiplies looked-up embeddings by sqrt(d)) applies to looked-up embeddings only, never to the vector.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from nla.errors import NLAInputError

# model_types whose embedding layer multiplies its output by sqrt(hidden_size) inside forward().
SCALED_EMBED_MODEL_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "t5"})


def embed_scale(config: Any) -> float:
    """sqrt(d) for architectures that scale embeddings in forward (Gemma), else 1.0."""
    text = getattr(config, "text_config", None) or config
    if getattr(text, "model_type", "") in SCALED_EMBED_MODEL_TYPES:
        return math.sqrt(text.hidden_size)
    return 1.0


def as_vectors(activations: Any, d_model: int, *, name: str = "activation") -> torch.Tensor:
    """Validate and stack vectors to a float32 (N, d) tensor: right d, finite, non-zero.

    Accepts one vector (d,), a batch (N, d), a list of vectors, numpy or torch.
    """
    try:
        if isinstance(activations, torch.Tensor):
            t = activations.detach().to("cpu", torch.float32)
        elif isinstance(activations, (list, tuple)) and activations and not np.isscalar(activations[0]):
            t = torch.stack([torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in activations])
        else:
            t = torch.as_tensor(np.asarray(activations, dtype=np.float32))
    except (ValueError, TypeError, RuntimeError) as e:
        raise NLAInputError(f"{name}: cannot read as float vectors ({e}). Fix: pass arrays of {d_model} floats.") from e
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != d_model:
        raise NLAInputError(
            f"{name}: shape {tuple(t.shape)} but this checkpoint reads vectors of d_model={d_model}. Fix: extract "
            "activations with the base model and layer named in the sidecar (base_checkpoint, extraction_layer_index)."
        )
    if t.shape[0] == 0:
        raise NLAInputError(f"{name}: no vectors given. Fix: pass at least one vector of {d_model} floats.")
    bad = ~torch.isfinite(t).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()[:5]
        raise NLAInputError(f"{name}: rows {rows} contain NaN or inf. Fix: drop those rows or re-extract them.")
    norms = t.norm(dim=1)
    huge = ~torch.isfinite(norms)
    if huge.any():  # finite values whose squares overflow float32: the vector has no usable direction in float32
        rows = huge.nonzero().flatten().tolist()[:5]
        raise NLAInputError(f"{name}: rows {rows} have a norm too large for float32 (values near 1e19 or more). "
                            "Fix: pass the raw activations, or rescale those rows.")
    zero = norms == 0
    if zero.any():
        rows = zero.nonzero().flatten().tolist()[:5]
        raise NLAInputError(f"{name}: rows {rows} are all zeros and have no direction. Fix: drop those rows.")
    return t


def normalize(v: torch.Tensor, scale: float) -> torch.Tensor:
    """Rescale rows to L2 norm `scale`; the norm is computed in fp32 whatever v's dtype."""
    norm = v.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return v / (norm / scale).to(v.dtype)


def inject(
    input_ids: torch.Tensor,  # (B, T)
    embeds: torch.Tensor,  # (B, T, d): the model's own input embeddings (already embed-scaled)
    vectors: torch.Tensor,  # (N, d): raw activations, one per valid marker site in row-major order
    *,
    token_id: int,
    left_id: int,
    right_id: int,
    injection_scale: float,
) -> torch.Tensor:
    """Replace each marker site (marker id with both stated neighbours) by the scaled vector. Returns a new tensor."""
    is_marker = input_ids == token_id  # (B, T)
    left_ok = torch.zeros_like(is_marker)
    right_ok = torch.zeros_like(is_marker)
    left_ok[:, 1:] = input_ids[:, :-1] == left_id
    right_ok[:, :-1] = input_ids[:, 1:] == right_id
    sites = (is_marker & left_ok & right_ok).nonzero()  # (N', 2) in row-major order
    if sites.shape[0] != vectors.shape[0]:
        raise NLAInputError(
            f"found {sites.shape[0]} marker sites with the sidecar's neighbours but got {vectors.shape[0]} vectors. "
            "Fix: one vector per prompt; check the prompt holds the marker once (template or tokenizer drift)."
        )
    out = embeds.clone()
    out[sites[:, 0], sites[:, 1]] = normalize(vectors.to(out.device), injection_scale).to(out.dtype)
    return out
