"""Writing checkpoints in the release layout, and `nla init`: an AV/AR init pair from any local HF base.

AV folder = HF causal LM + tokenizer + nla_meta.yaml. AR folder = the base cut to K+1 blocks + tokenizer +
value_head.safetensors + nla_meta.yaml. Training loops call the savers; nothing here trains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nla import hf
from nla import prompt as P
from nla.ar import ARModel
from nla.extract import Extractor
from nla.extract_config import ExtractConfig
from nla.meta import NLAMeta, TokenMeta
from nla.errors import NLAInputError

# Generic English used to measure the residual norm at layer K when `nla init` is given no injection scale.
SCALE_PROBE_TEXTS = (
    "The history of papermaking stretches back nearly two thousand years, beginning in China and spreading "
    "westward along trade routes over many centuries, until mills were built across Europe.",
    "In the early morning the market fills with vendors arranging their stalls, stacking crates of produce and "
    "calling out the day's prices to passing shoppers who stop to compare the fruit.",
    "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return total / len(values)\n",
    "The committee met on Tuesday to review the budget. After a long discussion, members agreed to delay the vote "
    "until the auditors had finished their report on the previous year's spending.",
)


def save_av(model: Any, tokenizer: Any, meta: NLAMeta, folder: str | Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    meta.save(folder)
    return folder


def save_ar(model: ARModel, tokenizer: Any, meta: NLAMeta, folder: str | Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(str(folder))
    meta.save(folder)
    return folder


def pair_metas(tokenizer: Any, *, d_model: int, layer: int, injection_scale: float, base_checkpoint: str,
               av_template: str = P.DEFAULT_AV_TEMPLATE, ar_template: str = P.DEFAULT_AR_TEMPLATE,
               stage: str = "init") -> tuple[NLAMeta, NLAMeta]:
    """Sidecars for a new AV/AR pair: marker chosen from the tokenizer, neighbours from the rendered template."""
    char, token_id, left, right = P.find_marker(tokenizer, av_template)
    tokens = TokenMeta(char, token_id, left, right, P.critic_suffix_ids(tokenizer, ar_template))
    common = dict(kind="nla_model", d_model=d_model, layer=layer, stage=stage, base_checkpoint=base_checkpoint,
                  tokens=tokens, av_template=av_template, ar_template=ar_template)
    av = NLAMeta(role="av", injection_scale=float(injection_scale), mse_scale=math.sqrt(d_model), **common)
    ar = NLAMeta(role="ar", injection_scale=None, mse_scale=math.sqrt(d_model), **common)
    return av.derive(), ar.derive()


def measure_injection_scale(extractor: Extractor, texts: list[str] | tuple[str, ...]) -> float:
    """Mean L2 norm of block-K activations over the texts' non-special tokens (the release's rule of thumb)."""
    rows = extractor(list(texts))
    if rows["vector"].shape[0] == 0:
        raise ValueError("no eligible positions in the probe texts")
    return float(np.linalg.norm(rows["vector"], axis=1).mean())


def init_pair(base_dir: str | Path, layer: int, out_dir: str | Path, *, injection_scale: float | None = None,
              av_template: str = P.DEFAULT_AV_TEMPLATE, ar_template: str = P.DEFAULT_AR_TEMPLATE,
              dtype: torch.dtype = torch.float32) -> tuple[Path, Path]:
    """Write out_dir/av and out_dir/ar (stage: init) from a local HF base folder. Returns both paths."""
    if injection_scale is not None and not (math.isfinite(injection_scale) and injection_scale > 0):
        raise NLAInputError(f"injection_scale (--injection-scale) {injection_scale}: must be an L2 norm above 0. "
                            "Fix: leave it out to measure the mean activation norm at layer K, or pass that norm.")
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    tokenizer = hf.load_tokenizer(base_dir)
    base = hf.load_causal_lm(base_dir, dtype=dtype)
    d = base.config.get_text_config().hidden_size
    if injection_scale is None:
        probe = Extractor(base, tokenizer, ExtractConfig(layer=layer, min_position=1, all_positions=True))
        injection_scale = measure_injection_scale(probe, SCALE_PROBE_TEXTS)
    av_meta, ar_meta = pair_metas(tokenizer, d_model=d, layer=layer, injection_scale=injection_scale,
                                  base_checkpoint=str(base_dir), av_template=av_template, ar_template=ar_template)
    av_dir = save_av(base, tokenizer, av_meta.derive(parent_checkpoints=[str(base_dir)]), out_dir / "av")
    del base
    ar = ARModel.from_base(base_dir, layer, dtype=dtype)
    ar_dir = save_ar(ar, tokenizer, ar_meta.derive(parent_checkpoints=[str(base_dir)]), out_dir / "ar")
    return av_dir, ar_dir
