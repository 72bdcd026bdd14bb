"""The input embedding table alone, read from a checkpoint's safetensors without building the model.

Engines that take prompt embeddings (vLLM) need only the embedding lookup on the client side: a 7B model's table is
~1 GB against 15 GB for the whole model. Architectures whose embedding layer scales its output (Gemma: x sqrt(d))
get that scale applied here to looked-up tokens, as the model itself would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from nla import hf
from nla.errors import NLACheckpointError
from nla.injection import embed_scale

_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")


class TableEmbedding(torch.nn.Module):
    """ids (B, T) -> (B, T, d), exactly what the model's own input embedding layer returns."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.embedding(ids, self.weight)
        return out * torch.tensor(self.scale, dtype=out.dtype) if self.scale != 1.0 else out


def load_input_embeddings(folder: str | Path, *, dtype: torch.dtype = torch.float32) -> TableEmbedding:
    folder = hf.check_folder(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        keys = [k for k in weight_map if k.endswith(_SUFFIXES)]
        files = {k: folder / weight_map[k] for k in keys}
    else:
        shard = folder / "model.safetensors"
        if not shard.is_file():
            raise NLACheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json. Fix: download "
                                     "the checkpoint's weights.")
        with safe_open(str(shard), framework="pt") as f:
            keys = [k for k in f.keys() if k.endswith(_SUFFIXES)]
        files = {k: shard for k in keys}
    keys = [k for k in keys if "vision" not in k and "audio" not in k]  # multimodal checkpoints: the text table only
    if len(keys) != 1:
        raise NLACheckpointError(f"{folder}: expected one input-embedding tensor (*{'|'.join(_SUFFIXES)}), found "
                                 f"{keys}. Fix: this architecture needs its embedding key added here.")
    with safe_open(str(files[keys[0]]), framework="pt") as f:
        weight = f.get_tensor(keys[0]).to(dtype)
    return TableEmbedding(weight, embed_scale(hf.load_config(folder)))
