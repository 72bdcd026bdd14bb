"""Round-trip scores: mse_nrm = 2(1 - cos) after normalising both vectors to mse_scale, and fve_nrm.

Plain tensor functions, no models. fve_nrm's baseline is the predict-the-mean variance of the sqrt(d)-normalised
originals (the release's `fve_nrm`), so 0 means "no better than the mean", 1 perfect, and a shuffled control sits
near -1.
"""

from __future__ import annotations

import torch

from nla.injection import normalize


def mse_nrm(recon: torch.Tensor, original: torch.Tensor, mse_scale: float) -> torch.Tensor:
    """(N,) mean over d of (r - v)^2 with both rows at L2 norm mse_scale; equals 2(1 - cos) when scale = sqrt(d)."""
    r = normalize(recon.float(), mse_scale)
    v = normalize(original.float(), mse_scale)
    return ((r - v) ** 2).mean(dim=-1)


def cosine(recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """(N,) cosine similarity in fp32."""
    return torch.nn.functional.cosine_similarity(recon.float(), original.float(), dim=-1)


def mean_baseline(originals: torch.Tensor, mse_scale: float) -> float:
    """Var of the normalised originals: mean squared distance from their mean (the predict-the-mean mse)."""
    v = normalize(originals.float(), mse_scale)
    return ((v - v.mean(dim=0, keepdim=True)) ** 2).mean().item()


def fve_nrm(mse: torch.Tensor, originals: torch.Tensor, mse_scale: float) -> float:
    """1 - mean(mse_nrm) / Var(v_nrm), the baseline computed over `originals` (the evaluated set)."""
    return 1.0 - mse.float().mean().item() / mean_baseline(originals, mse_scale)
