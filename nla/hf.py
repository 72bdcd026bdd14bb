"""Loading HF checkpoint folders: tokenizer, causal LM (optionally cut to its first K+1 blocks), the decoder stack.

Every failure to read a folder becomes an NLACheckpointError naming the folder and the fix. No NLA logic here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nla.errors import NLACheckpointError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_FINAL_NORM_ATTRS = ("norm", "final_layernorm", "ln_f")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (a truncated model reports every skipped block)."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        tlog.enable_progress_bar()


def check_folder(folder: str | Path) -> Path:
    p = Path(folder)
    if not p.is_dir():
        raise NLACheckpointError(f"{p}: no such checkpoint folder. Fix: pass a local HF model folder "
                                 "(config.json + safetensors + tokenizer files).")
    if not (p / "config.json").is_file():
        raise NLACheckpointError(f"{p}: no config.json, so this is not an HF model folder. Fix: point at the folder "
                                 "that holds config.json and the *.safetensors weights.")
    return p


def load_tokenizer(folder: str | Path) -> Any:
    from transformers import AutoTokenizer

    p = check_folder(folder)
    try:
        return AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise NLACheckpointError(f"{p}: cannot load its tokenizer ({e}). Fix: the folder needs tokenizer.json / "
                                 "tokenizer_config.json as saved by save_pretrained.") from e


def load_config(folder: str | Path, *, n_blocks: int | None = None) -> Any:
    """The folder's config, cut to its first `n_blocks` decoder blocks when given."""
    from transformers import AutoConfig

    p = check_folder(folder)
    try:
        cfg = AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise NLACheckpointError(f"{p}/config.json: unreadable ({e}). Fix: restore it from the release.") from e
    if n_blocks is not None:
        truncate_config(cfg, n_blocks, source=str(p))
    return cfg


def truncate_config(cfg: Any, n_blocks: int, *, source: str = "config") -> None:
    text = getattr(cfg, "text_config", None) or cfg
    if not 1 <= n_blocks <= text.num_hidden_layers:
        raise NLACheckpointError(f"{source}: asked for {n_blocks} blocks but the model has {text.num_hidden_layers}. "
                                 "Fix: choose a layer K with 0 <= K < num_hidden_layers.")
    text.num_hidden_layers = n_blocks
    if getattr(text, "layer_types", None) is not None:  # Gemma-3 / Qwen2 keep one entry per block
        text.layer_types = list(text.layer_types)[:n_blocks]


def load_causal_lm(folder: str | Path, *, dtype: Any = None, device: str = "cpu",
                   n_blocks: int | None = None) -> Any:
    """AutoModelForCausalLM from a folder in eval mode (dtype: a torch dtype, float32 when None); with n_blocks,
    blocks past it are never loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    p = check_folder(folder)
    cfg = load_config(p, n_blocks=n_blocks)
    try:
        with quiet():
            model = AutoModelForCausalLM.from_pretrained(str(p), config=cfg, dtype=dtype or torch.float32)
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        raise NLACheckpointError(f"{p}: cannot load the weights ({type(e).__name__}: {str(e)[:300]}). Fix: the "
                                 "safetensors files are missing or truncated; download the checkpoint again.") from e
    return model.to(device).eval()


def decoder(model: Any) -> Any:
    """The decoder stack (the module holding embed_tokens, layers and the final norm) of a causal LM."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    if not hasattr(inner, "layers"):
        inner = getattr(inner, "language_model", inner)
    if not hasattr(inner, "layers"):
        raise NLACheckpointError(f"{type(model).__name__}: no decoder `.layers` found; this architecture is not "
                                 "supported yet. Fix: use a Llama/Qwen2/Gemma-3/Mistral-family checkpoint.")
    return inner


def final_norm_attr(inner: Any) -> str:
    """Name of the decoder's final norm ("norm" for Llama/Qwen2/Gemma-3)."""
    for attr in _FINAL_NORM_ATTRS:
        if hasattr(inner, attr):
            return attr
    raise NLACheckpointError(f"{type(inner).__name__}: no final norm among {_FINAL_NORM_ATTRS}; unsupported layout.")
