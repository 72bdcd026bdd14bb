"""Which checkpoints form a pair, and who they are: the one home of that decision.

`resolve_pair` turns the configured names ("toy", a folder, "" for none) into checked folders: each AV/AR folder
is checked as its loader will check it (sidecar against tokenizer, weights readable), the AV and AR must read the
same layer K and width d, and the base must have that width. The planner, the server, training and retraining all
call it, so they accept and refuse exactly the same pairs with the same words.

A checkpoint has two names: a short readable `id` (its last two path parts, stored in the tables' av/ar/base_model
columns) and a content `fingerprint` (recipes use it, so a retrained AV saved to the same folder is another
recipe). This module loads no weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from nla.errors import NLAConfigError
from nla.hfconfig import hidden_size
from nla.meta import NLAMeta

SMALL_FILE_BYTES = 4 * 2**20  # files up to this size are hashed whole (sidecar, config, tokenizer, small weights)
SAMPLE_BYTES = 2**20  # of a large file: its safetensors header, its size, and 1 MiB at its start, middle and end


def resolve_folder(value: str, part: str) -> str:
    """A configured checkpoint: "toy" = the toy kit's `part` (built if missing), "" = none, else the folder."""
    if value == "toy":
        from nla.toy.kit import ensure_toy_kit

        return str(ensure_toy_kit() / part)
    return str(Path(value).expanduser().resolve()) if value else ""


def checkpoint_id(folder: str | Path) -> str:
    """A short stable id for a checkpoint folder: its last two path parts (e.g. 'c32c06f5f7e2/av')."""
    p = Path(folder).resolve()
    return f"{p.parent.name}/{p.name}"


def fingerprint(folder: str | Path) -> str:
    """The folder's content identity (hex, 20 chars): every file's name and size; small files whole; of each large
    file its first, middle and last MiB (a safetensors header, which names every tensor and offset, sits in the
    first). Seconds for a 140 GB 70B folder instead of minutes for a full hash; two fine-tunes of one base differ in
    their sidecars and in every sampled MiB of weights."""
    h = hashlib.blake2b(digest_size=10)
    root = Path(folder)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not any(x.startswith(".") for x in
                                                                          p.relative_to(root).parts)):
        size = f.stat().st_size
        h.update(f"{f.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= SMALL_FILE_BYTES:
                h.update(fh.read())
                continue
            for offset in (0, size // 2, size - SAMPLE_BYTES):
                fh.seek(offset)
                h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    path: str  # absolute folder
    id: str  # readable id stored in the tables
    fingerprint: str  # content identity, for recipes


def checkpoint(folder: str) -> Checkpoint | None:
    return Checkpoint(folder, checkpoint_id(folder), fingerprint(folder)) if folder else None


@dataclass(frozen=True)
class Pair:
    base: Checkpoint | None
    av: Checkpoint
    ar: Checkpoint | None
    layer: int  # K, from the AV's sidecar
    d: int
    av_meta: NLAMeta
    ar_meta: NLAMeta | None


def resolve_pair(*, av: str, ar: str = "", base: str = "", check_av: bool = True, what: str = "labeling") -> Pair:
    """Resolve and check the configured AV (required), AR and base ("" = not used). check_av=False reads only the
    AV's sidecar (extraction needs its layer and width, not its weights)."""
    from nla.checks import check_checkpoint, check_weights

    if not av:
        raise NLAConfigError(f"models.av is empty: {what} needs an AV (its sidecar names the layer K and width d). "
                             "Fix: set models.av to the AV folder (or toy).")
    av_dir = resolve_folder(av, "av")
    av_meta = check_checkpoint(av_dir, "av") if check_av else NLAMeta.load(av_dir)
    layer, d = av_meta.layer, av_meta.d_model
    ar_dir, ar_meta = resolve_folder(ar, "ar"), None
    if ar_dir:
        ar_meta = check_checkpoint(ar_dir, "ar")
        if (ar_meta.layer, ar_meta.d_model) != (layer, d):
            raise NLAConfigError(f"models.ar {ar_dir} reads layer {ar_meta.layer} (d={ar_meta.d_model}) but models.av "
                                 f"{av_dir} reads layer {layer} (d={d}). Fix: use the AV/AR pair trained together.")
    base_dir = resolve_folder(base, "base")
    if base_dir:
        base_d = hidden_size(base_dir)
        if base_d != d:
            raise NLAConfigError(f"models.base {base_dir} has d={base_d} but the AV reads d={d}. Fix: point models.base"
                                 f" at the AV's base ({av_meta.base_checkpoint}).")
        check_weights(base_dir)
    return Pair(base=checkpoint(base_dir), av=checkpoint(av_dir), ar=checkpoint(ar_dir), layer=layer, d=d,
                av_meta=av_meta, ar_meta=ar_meta)


def lake_base_id(configured: str, base: Checkpoint) -> str:
    """The base id stored in activations.base_model (part of every act_id): the configured name for a real base (a
    hub name such as Qwen/Qwen2.5-7B-Instruct is what users query by), the kit-relative id for the toy kit."""
    return base.id if configured == "toy" else configured


__all__ = ["Checkpoint", "Pair", "checkpoint", "checkpoint_id", "fingerprint", "lake_base_id", "resolve_folder",
           "resolve_pair"]
