"""Read an HF folder's config.json fields (the text config's, for multimodal configs) without importing
transformers: 3 s of start-up on 2 cores, too much for a planner or a sidecar check.

Only whole-number fields the file states are read here; a field the file leaves to the model type's defaults is
None, and the caller falls back to AutoConfig (nla.hf.load_config) where it must know. Not a config loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _text_config(folder: str | Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or unreadable: the loaders refuse it with their own message
    if not isinstance(cfg, dict):
        return None
    text = cfg.get("text_config")
    return text if isinstance(text, dict) else cfg


def stated_int(folder: str | Path, key: str) -> int | None:
    """config.json's (text config's) `key` when the file states it as a whole number, else None."""
    text = _text_config(folder)
    v = text.get(key) if text is not None else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def hidden_size(folder: str | Path) -> int:
    """The model's residual width d: config.json's hidden_size, through AutoConfig when the file leaves it to the
    model type's defaults."""
    d = stated_int(folder, "hidden_size")
    if d is not None:
        return d
    from nla.hf import check_folder, load_config

    return load_config(check_folder(folder)).get_text_config().hidden_size


def n_blocks(folder: str | Path) -> int:
    """How many transformer blocks the folder's weights hold (config.json's num_hidden_layers)."""
    n = stated_int(folder, "num_hidden_layers")
    if n is not None:
        return n
    from nla.hf import check_folder, load_config

    return load_config(check_folder(folder)).get_text_config().num_hidden_layers
