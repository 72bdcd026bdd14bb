"""Plan a labeling run before any work starts: resolve models, check they fit together and fit the lake, list the
shards still to do. Every mismatch is caught here, with nothing written. No Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nla.client import check_checkpoint, check_weights
from nla.errors import NLAConfigError, NLAInputError
from nla.hfconfig import hidden_size
from nla.labeling.config import LabelConfig
from nla.labeling.corpus import Shard, list_shards
from nla.lake.store import Lake
from nla.meta import NLAMeta
from schemas import ACTIVATIONS, EXPLANATIONS

Mode = Literal["label", "extract", "from-activations"]


@dataclass
class Plan:
    mode: Mode
    lake: Lake
    base: str
    av: str
    ar: str
    base_id: str  # ids stored in the tables (activations.base_model, explanations.av/ar)
    av_id: str
    ar_id: str
    layer: int
    d: int
    shards: list[Shard]  # every input shard, in order
    todo: list[Shard]  # not yet committed

    @property
    def writes(self) -> list[str]:
        return {"label": [ACTIVATIONS.name, EXPLANATIONS.name], "extract": [ACTIVATIONS.name],
                "from-activations": [EXPLANATIONS.name]}[self.mode]


def checkpoint_id(folder: str) -> str:
    """A short stable id for a checkpoint folder: its last two path parts (e.g. 'c32c06f5f7e2/av')."""
    p = Path(folder).resolve()
    return f"{p.parent.name}/{p.name}"


def _toy(part: str) -> str:
    from nla.toy.build import ensure_toy_kit

    return str(ensure_toy_kit() / part)


def make_plan(cfg: LabelConfig, mode: Mode) -> Plan:
    m = cfg.models
    base = _toy("base") if m.base == "toy" else str(Path(m.base).expanduser()) if m.base else ""
    av = _toy("av") if m.av == "toy" else str(Path(m.av).expanduser()) if m.av else ""
    ar = _toy("ar") if m.ar == "toy" else str(Path(m.ar).expanduser()) if m.ar else ""
    lake = Lake(cfg.lake or None)
    if not av:
        raise NLAConfigError("models.av is empty: extraction reads its layer K from the AV's sidecar. "
                             "Fix: set models.av to the AV you will label with.")
    # the AV's and AR's folders are checked as their loaders will check them (sidecar against tokenizer, weights
    # readable) here, so a bad folder is one error before Ray starts, not a failed actor
    av_meta = check_checkpoint(av, "av") if mode != "extract" else NLAMeta.load(av)
    layer, d = av_meta.layer, av_meta.d_model
    if ar and mode != "extract":
        ar_meta = check_checkpoint(ar, "ar")
        if (ar_meta.layer, ar_meta.d_model) != (layer, d):
            raise NLAConfigError(f"models.ar {ar} reads layer {ar_meta.layer} (d={ar_meta.d_model}) but models.av {av} "
                                 f"reads layer {layer} (d={d}). Fix: use the AV/AR pair trained together.")
    if mode != "from-activations":
        base_d = hidden_size(base)
        if base_d != d:
            raise NLAConfigError(f"models.base {base} has d={base_d} but the AV reads d={d}. Fix: point models.base "
                                 f"at the AV's base ({av_meta.base_checkpoint}).")
        check_weights(base)
    if lake.exists(ACTIVATIONS.name):
        have = lake.layout(ACTIVATIONS.name).get("d")
        if have != d:
            raise NLAConfigError(f"lake {lake.root}: its activations have d={have}, these models d={d}. Fix: use "
                                 "another lake (lake=PATH) for another model.")
    if mode == "from-activations":
        if not lake.exists(ACTIVATIONS.name):
            raise NLAInputError(f"lake {lake.root} has no activations to label. Fix: run `nla extract` first.")
        shards = [Shard(s, "", "lake") for s in sorted(lake.committed_shards(ACTIVATIONS.name))]
    else:
        shards = list_shards(cfg.input, cfg.input_format)
    lake.check_writable()
    plan = Plan(mode=mode, lake=lake, base=base, av=av, ar=ar, base_id=checkpoint_id(base) if m.base == "toy"
                else m.base, av_id=checkpoint_id(av), ar_id=checkpoint_id(ar) if ar else "", layer=layer, d=d,
                shards=shards, todo=[])
    done = set.intersection(*(lake.committed_shards(t) for t in plan.writes))
    plan.todo = [s for s in shards if s.id not in done]
    return plan
