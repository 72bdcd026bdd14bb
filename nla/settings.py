"""The config sections several programs share, declared once: which models and where they run (ModelsConfig, for
labeling and serving), how the AV samples (SamplingSettings, for labeling and the HTTP API's defaults) and the names
of weight dtypes (DType). Not here: loading YAML (nla/config.py) or any model; importing it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from nla.av import SamplingParams

DType = Literal["float32", "bfloat16", "float16"]  # weight dtypes, by their torch names
TrainDType = Literal["float32", "bfloat16"]  # the ones training runs in (float16 would need loss scaling)


@dataclass
class ModelsConfig:
    base: str = "toy"  # base model folder (extraction; the server's text endpoints); "toy" = the toy kit's base
    # (built if missing); "" = none
    av: str = "toy"  # AV checkpoint folder; "toy" = the toy kit's AV (built if missing)
    ar: str = "toy"  # AR checkpoint folder; "toy" = the toy kit's AR; "" = no AR (no scores, reconstruct or search)
    device: str = "cpu"  # cpu | cuda (the server's model deployments need num_gpus too)
    dtype: DType = "float32"  # weights dtype on the device


@dataclass
class SamplingSettings:
    samples: int = 1  # explanations per activation; every one is stored and scored
    temperature: float = 0.0  # 0 = greedy; the release samples at 1.0 for training data
    top_p: float = 1.0
    max_new_tokens: int = 200  # the release's cap
    seed: int = 0  # sampling seed (per batch)

    def params(self) -> SamplingParams:
        """The engine's parameters for one sample (SamplingParams checks them)."""
        from nla.av import SamplingParams

        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              seed=self.seed)


def torch_dtype(name: DType) -> torch.dtype:
    """The torch dtype of a weight dtype name ("bfloat16" -> torch.bfloat16)."""
    import torch

    return getattr(torch, name)
