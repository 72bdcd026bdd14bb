"""Plan a labeling run before any work starts: resolve models, check they fit together and fit the lake, list the
units still to do: a shard's content (fingerprint) not yet committed under this run's recipe. Every mismatch is caught
here, with nothing written. No Ray.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from nla.errors import NLAConfigError, NLAInputError
from nla.labeling.config import LabelConfig
from nla.labeling.corpus import Shard, list_shards
from nla.labeling.identity import Recipe, activation_recipe, explanation_recipe
from nla.lake import storage
from nla.lake.migrate import LEGACY_RECIPE
from nla.lake.store import Lake
from nla.pair import lake_base_id, resolve_pair
from nla.schemas import ACTIVATIONS, EXPLANATIONS

Mode = Literal["label", "extract", "from-activations"]
FETCH_THREADS = 8  # objects of an s3:// input fingerprinted at once


@dataclass
class Plan:
    mode: Mode
    lake: Lake
    base: str  # folders ("" = not used in this mode)
    av: str
    ar: str
    base_id: str  # ids stored in the tables (activations.base_model, explanations.av/ar)
    av_id: str
    ar_id: str
    layer: int
    d: int
    recipes: dict[str, Recipe]  # table -> the recipe this run writes it under
    shards: list[Shard]  # every input unit, in order
    todo: list[Shard] = field(default_factory=list)  # units not yet committed under this run's recipes
    skipped_changed: list[Shard] = field(default_factory=list)  # changed content left out (on_changed=skip)
    legacy: int = 0  # shards of this input committed by an older nla (no fingerprint or recipe): labeled again
    input_options: dict[str, str] | None = None  # storage options of an s3:// input (the readers get them)

    @property
    def writes(self) -> list[str]:
        return {"label": [ACTIVATIONS.name, EXPLANATIONS.name], "extract": [ACTIVATIONS.name],
                "from-activations": [EXPLANATIONS.name]}[self.mode]

    def recipe_hash(self, table: str) -> str:
        return self.recipes[table].hash


def make_plan(cfg: LabelConfig, mode: Mode) -> Plan:
    m = cfg.models
    lake = Lake(cfg.lake or None)
    lake.check_writable()  # first: a missing bucket or bad credentials is one clear error before anything else
    pair = resolve_pair(av=m.av, ar=m.ar if mode != "extract" else "",
                        base=m.base if mode != "from-activations" else "", check_av=mode != "extract")
    layer, d = pair.layer, pair.d
    lake.check_versions()  # a lake of an older schema is refused with the command that migrates it
    if lake.exists(ACTIVATIONS.name):
        have = lake.layout(ACTIVATIONS.name).get("d")
        if have != d:
            raise NLAConfigError(f"lake {lake.root}: its activations have d={have}, these models d={d}. Fix: use "
                                 "another lake (lake=PATH) for another model.")
    recipes: dict[str, Recipe] = {}
    if pair.base is not None:
        recipes[ACTIVATIONS.name] = activation_recipe(base_fingerprint=pair.base.fingerprint, layer=layer,
                                                      extract=cfg.extract, dtype=m.dtype)
    if mode != "extract":
        recipes[EXPLANATIONS.name] = explanation_recipe(av_fingerprint=pair.av.fingerprint, ar_fingerprint=(
            pair.ar.fingerprint if pair.ar else ""), sampling=cfg.sampling, dtype=m.dtype)
    ledger = lake.ledger()
    if mode == "from-activations":
        if not lake.exists(ACTIVATIONS.name):
            raise NLAInputError(f"lake {lake.root} has no activations to label. Fix: run `nla extract` first.")
        units = sorted({r["shard"] for r in ledger if r["table_name"] == ACTIVATIONS.name})
        shards = [Shard(u, "", "lake", name=u) for u in units]
        input_options = None
    else:
        input_options = storage.storage_options(cfg.input) if cfg.input else None
        shards = fingerprinted(list_shards(cfg.input, cfg.input_format, input_options), input_options)
    plan = Plan(mode=mode, lake=lake, base=pair.base.path if pair.base else "", av=pair.av.path,
                ar=pair.ar.path if pair.ar else "", base_id=lake_base_id(m.base, pair.base) if pair.base else "",
                av_id=pair.av.id, ar_id=pair.ar.id if pair.ar else "", layer=layer, d=d, recipes=recipes,
                shards=shards, input_options=input_options)
    done = {(r["table_name"], r["shard"], r["recipe"]) for r in ledger}
    todo = [s for s in shards if any((t, s.id, plan.recipe_hash(t)) not in done for t in plan.writes)]
    plan.todo = _changed(todo, ledger, cfg.on_changed, plan) if mode != "from-activations" else todo
    legacy_names = {r["name"] for r in ledger if r["recipe"] == LEGACY_RECIPE}
    plan.legacy = sum(1 for s in plan.todo if s.name in legacy_names)
    return plan


def fingerprinted(shards: list[Shard], options: dict[str, str] | None) -> list[Shard]:
    """Every shard with its content fingerprint. Objects on a store are hashed FETCH_THREADS at a time: reading them
    waits on the network, not the CPU."""
    if options is None:
        return [s.fingerprinted() for s in shards]
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        return list(pool.map(lambda s: s.fingerprinted(options), shards))


def _changed(todo: list[Shard], ledger: list[dict], on_changed: str, plan: Plan) -> list[Shard]:
    """Shards at a path whose committed content had another fingerprint: refused, skipped or labeled as new."""
    by_path: dict[str, dict[str, dict]] = {}
    for r in ledger:
        if r["path"] and r["fingerprint"]:
            by_path.setdefault(r["path"], {})[r["fingerprint"]] = r
    changed = [(s, next(iter(by_path[s.path].values()))) for s in todo
               if s.path in by_path and s.fingerprint not in by_path[s.path]]
    if not changed or on_changed == "relabel":
        return todo
    if on_changed == "skip":
        plan.skipped_changed = [s for s, _ in changed]
        return [s for s in todo if s not in plan.skipped_changed]
    s, r = changed[0]
    more = f" ({len(changed) - 1} more shards changed too)" if len(changed) > 1 else ""
    raise NLAInputError(f"input shard {s.name} ({s.path}) changed since run {r['run_id']} committed it: its "
                        f"fingerprint was {r['fingerprint'][:12]}, it is now {s.fingerprint[:12]}{more}. Fix: "
                        "on_changed=relabel labels the new content beside the old rows; on_changed=skip leaves the "
                        "changed shards out; or restore the file.")
