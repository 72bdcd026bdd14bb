"""Which toy kit, and where: the recipe (ToyRecipe), its cache folder keyed by the recipe and the source that shapes the
kit, and ensure_toy_kit, which builds it once (nla/toy/build.py, imported only then). Light: resolving "toy" in a
config or a job's driver costs no torch import. Not the build itself."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nla.bases import nla_home


@dataclass
class ToyRecipe:
    seed: int = 0
    n_docs: int = 3000  # documents; the last eval_fraction of them are held out (split by document)
    eval_fraction: float = 0.1
    hidden: int = 128  # base model width (d_model of the pair)
    blocks: int = 3
    heads: int = 4
    layer: int = 1  # K: the pair reads the output of block 1
    positions_per_doc: int = 6
    min_position: int = 8
    base_steps: int = 500
    base_lr: float = 3e-3
    base_batch: int = 32
    ar_steps: int = 800
    av_steps: int = 600
    sft_lr: float = 1e-3
    sft_batch: int = 64
    roundtrip_eval: int = 384  # held-out vectors explained greedily for the round-trip figure

    def key(self) -> str:
        """Recipe + the source of every module that shapes the kit: a change to either rebuilds it."""
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        root = Path(__file__).resolve().parents[1]
        for f in sorted([*(root / "toy" / n for n in ("corpus.py", "tokenizer.py", "build.py", "kit.py")),
                         *(root / "train" / n for n in ("loop.py", "sft.py")),
                         *(root / n for n in ("ar.py", "av.py", "injection.py", "prompt.py", "extract.py",
                                              "extract_config.py", "checkpoint.py", "meta.py", "hf.py",
                                              "metrics.py"))]):
            h.update(f.read_bytes())
        return h.hexdigest()[:12]


def kit_dir(recipe: ToyRecipe | None = None) -> Path:
    return nla_home() / "toy" / (recipe or ToyRecipe()).key()


def ensure_toy_kit(recipe: ToyRecipe | None = None, *, log: Any = print) -> Path:
    """The cached kit folder (base/, av/, ar/, report.json), built first if missing."""
    import fcntl

    out = kit_dir(recipe)
    if (out / "report.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:  # concurrent processes build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "report.json").is_file():
            return out
        from nla.toy.build import build

        return build(out, recipe, log=log)
