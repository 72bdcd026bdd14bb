"""The sidecar `nla_meta.yaml`: load (schema v2, legacy actor/critic names, dataset sidecars), validate, write.

The sidecar is the single source of injection scale, marker ids, templates, layer and mse_scale: nothing else in nla
hard-codes them. Unknown keys are kept and written back unchanged. This module does not load models.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nla import prompt as P
from nla.errors import NLAConfigError

log = logging.getLogger(__name__)

SIDECAR_NAME = "nla_meta.yaml"
SQRT_D = "sqrt_d_model"  # the release's sentinel for "sqrt(d_model)" in extraction.{injection,mse}_scale
_ROLE_ALIASES = {"av": "av", "actor": "av", "ar": "ar", "critic": "ar"}
# Where a sidecar may state the layer K, in the order the release reads them. Every spelling holds K itself: schema
# v1 wrote `critic.num_hidden_layers`, v2 writes `critic.extraction_layer_index`, the release's inference docs show
# `ar.num_hidden_layers`. None of them is the block count (config.json of the truncated AR has K + 1 blocks).
LAYER_KEYS = ("extraction_layer_index", "critic.extraction_layer_index", "ar.extraction_layer_index",
              "critic.num_hidden_layers", "ar.num_hidden_layers")
_said: set[str] = set()  # AR folders whose K was taken from config.json: said once per process

Role = Literal["av", "ar"]


@dataclass
class TokenMeta:
    injection_char: str
    injection_token_id: int
    injection_left_neighbor_id: int
    injection_right_neighbor_id: int
    critic_suffix_ids: list[int] | None = None


@dataclass
class NLAMeta:
    """A parsed sidecar. `raw` keeps the whole mapping, so unknown keys survive a round trip."""

    kind: Literal["nla_model", "nla_dataset"]
    d_model: int
    layer: int  # K: the activation is the output of block K (= HF hidden_states[K+1])
    role: Role | None = None  # None for dataset sidecars
    schema_version: int = 2
    stage: str | None = None  # init | sl | rl
    base_checkpoint: str | None = None
    injection_scale: float | None = None  # AV: L2 norm the injected vector is rescaled to
    mse_scale: float | None = None  # AR: L2 norm both vectors get before mse (= sqrt(d))
    tokens: TokenMeta | None = None
    av_template: str | None = None
    ar_template: str | None = None
    source: str = "<memory>"  # where it was read from, for error messages
    raw: dict[str, Any] = field(default_factory=dict)
    # the dotted keys the layer was read from (written back under the same spelling); () = K came from config.json
    layer_keys: tuple[str, ...] | None = None  # None: a sidecar made here, written with the release's v2 keys

    @property
    def critic_suffix_ids(self) -> list[int] | None:
        """The AR prompt's stable tail ids (an AR sidecar may hold them without the AV's marker fields)."""
        if self.tokens is not None:
            return self.tokens.critic_suffix_ids
        t = self.raw.get("tokens")
        return t.get("critic_suffix_ids") if isinstance(t, dict) else None

    # ---- reading -------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> NLAMeta:
        """Read a checkpoint folder's `nla_meta.yaml` (or a sidecar file given directly)."""
        p = Path(path)
        f = p / SIDECAR_NAME if p.is_dir() else p
        if not f.is_file():
            raise NLAConfigError(
                f"{f}: no sidecar. An NLA checkpoint folder holds nla_meta.yaml beside config.json. Fix: point at the "
                "AV/AR folder itself, or create the pair with `nla init --base DIR --layer K --out DIR`."
            )
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise NLAConfigError(f"{f}: not valid UTF-8 YAML ({e}). Fix: restore the file from the release.") from e
        folder = f.parent if (f.parent / "config.json").is_file() else None
        return cls.from_dict(data, source=str(f), folder=folder)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>", folder: str | Path | None = None) -> NLAMeta:
        """Parse a sidecar mapping. `folder` is the checkpoint folder beside it: an AR's layer is checked against
        (or, when the sidecar names none, taken from) its config.json."""
        if not isinstance(data, dict):
            raise NLAConfigError(f"{source}: the sidecar must be a YAML mapping, got {type(data).__name__}.")
        r = _Reader(data, source)
        kind = r.get("kind")
        if kind == "nla_model":
            return cls._from_model(r, data, source, folder)
        if kind == "nla_dataset":
            return cls._from_dataset(r, data, source)
        raise NLAConfigError(f"{source}: key 'kind' is {kind!r}; expected 'nla_model' or 'nla_dataset'. "
                             "Fix: use the sidecar shipped with the checkpoint or dataset.")

    @classmethod
    def _from_model(cls, r: _Reader, data: dict, source: str, folder: str | Path | None) -> NLAMeta:
        role_raw = r.get("role")
        role = _ROLE_ALIASES.get(str(role_raw).lower()) if role_raw is not None else None
        if role is None:
            raise NLAConfigError(f"{source}: key 'role' is {role_raw!r}; expected av|ar (legacy: actor|critic). "
                                 "Fix: set it to the folder's role.")
        d = r.integer("d_model")
        layer, keys = _layer(r, role, folder)
        inj = _scale(r, "extraction.injection_scale", d, required=(role == "av"))
        mse = _scale(r, "extraction.mse_scale", d, required=False, default=math.sqrt(d))
        if role == "ar" and mse is None:
            raise NLAConfigError(
                f"{source}: key 'extraction.mse_scale' is null; the AR's score needs a number (sqrt(d_model) = "
                f"{math.sqrt(d):.4g}). Fix: set it, or use the sentinel '{SQRT_D}'."
            )
        return cls(
            kind="nla_model", d_model=d, layer=layer, role=role,
            schema_version=r.integer("schema_version", required=False) or 2,
            stage=data.get("stage"), base_checkpoint=data.get("base_checkpoint"),
            injection_scale=inj, mse_scale=mse, tokens=_tokens(r, role),
            av_template=_template(r, "av", required=(role == "av")),
            ar_template=_template(r, "ar", required=(role == "ar")),
            source=source, raw=data, layer_keys=keys,
        )

    @classmethod
    def _from_dataset(cls, r: _Reader, data: dict, source: str) -> NLAMeta:
        d = r.integer("extraction.d_model")
        return cls(
            kind="nla_dataset", d_model=d, layer=r.integer("extraction.layer_index"),
            schema_version=r.integer("schema_version", required=False) or 1,
            base_checkpoint=r.get("extraction.base_model", required=False),
            tokens=_tokens(r, None), av_template=_template(r, "av", required=False),
            ar_template=_template(r, "ar", required=False), source=source, raw=data,
        )

    # ---- checking against the live tokenizer --------------------------------------------------------------------
    def validate(self, tokenizer: Any) -> None:
        """Check the marker and templates against `tokenizer`, exactly as the release's loader does."""
        where = self.source
        if self.tokens is not None:
            t = self.tokens
            live = tokenizer.encode(t.injection_char, add_special_tokens=False)
            if live != [t.injection_token_id]:
                raise NLAConfigError(
                    f"{where}: key 'tokens.injection_char' {t.injection_char!r} encodes to {live} with this tokenizer,"
                    f" the sidecar says [{t.injection_token_id}] (tokenizer drift). Fix: load the tokenizer shipped "
                    "in the checkpoint folder, or regenerate the sidecar with `nla init`."
                )
            if t.injection_token_id == tokenizer.unk_token_id:
                raise NLAConfigError(f"{where}: key 'tokens.injection_char' {t.injection_char!r} is the UNK token. "
                                     "Fix: choose another marker (`nla init` picks one).")
            if self.av_template is not None:
                ids = P.render_chat_ids(tokenizer, self.av_template.format(injection_char=t.injection_char))
                try:
                    left, right = P.neighbours(ids, t.injection_token_id)
                except ValueError as e:
                    raise NLAConfigError(f"{where}: key 'prompt_templates.av': {e}. Fix: the template must hold "
                                         "{injection_char} once and the marker must not merge with its neighbours."
                                         ) from e
                if (left, right) != (t.injection_left_neighbor_id, t.injection_right_neighbor_id):
                    raise NLAConfigError(
                        f"{where}: keys 'tokens.injection_left/right_neighbor_id' say ({t.injection_left_neighbor_id},"
                        f" {t.injection_right_neighbor_id}) but the rendered prompt has ({left}, {right}) (template or"
                        " tokenizer drift). Fix: use the checkpoint's own tokenizer and template."
                    )
        suffix = self.critic_suffix_ids
        if suffix and self.role == "ar" and self.ar_template is not None:
            probe = P.as_id_list(tokenizer(P.ar_text(self.ar_template, "probe"), add_special_tokens=True)["input_ids"])
            if probe[-len(suffix):] != list(suffix):
                raise NLAConfigError(
                    f"{where}: key 'tokens.critic_suffix_ids' {suffix} does not end the rendered AR prompt "
                    f"({probe[-len(suffix):]}). Fix: use the checkpoint's own tokenizer."
                )

    # ---- writing ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The mapping to write: unknown keys from `raw` kept, known ones under the spelling they were read with (a
        sidecar made here gets the release's v2 keys: `extraction_layer_index`, and `critic.extraction_layer_index`
        for an AR)."""
        out = copy.deepcopy(self.raw)
        pt = dict(out.get("prompt_templates") or {})
        for role, tpl in (("av", self.av_template), ("ar", self.ar_template)):
            if tpl is not None:
                legacy = {"av": "actor", "ar": "critic"}[role]
                pt[legacy if legacy in pt and role not in pt else role] = tpl
        tokens = None
        if self.tokens is not None:
            tokens = {k: v for k, v in vars(self.tokens).items() if v is not None}
        if self.kind == "nla_dataset":
            out.update(kind="nla_dataset", schema_version=self.schema_version)
            ext = dict(out.get("extraction") or {})
            ext.update(d_model=self.d_model, layer_index=self.layer)
            ext.setdefault("norm", "none")
            if self.base_checkpoint is not None:
                ext["base_model"] = self.base_checkpoint
            out["extraction"] = ext
        else:
            out.update(kind="nla_model", schema_version=self.schema_version, role=self.role, stage=self.stage,
                       base_checkpoint=self.base_checkpoint, d_model=self.d_model)
            ext = dict(out.get("extraction") or {})
            ext.update(injection_scale=self.injection_scale, mse_scale=self.mse_scale)
            out["extraction"] = ext
            keys = self.layer_keys
            if keys is None:
                keys = ("extraction_layer_index",) + (("critic.extraction_layer_index",) if self.role == "ar" else ())
            for key in keys:
                _put(out, key, self.layer)
        if tokens is not None:
            out["tokens"] = tokens
        if pt:
            out["prompt_templates"] = pt
        return out

    def save(self, folder: str | Path) -> Path:
        f = Path(folder) / SIDECAR_NAME
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return f

    def derive(self, **changes: Any) -> NLAMeta:
        """A copy with known fields changed and `raw` keys updated (e.g. stage, training, parent_checkpoints)."""
        raw_updates = {k: changes.pop(k) for k in list(changes) if k not in self.__dataclass_fields__}
        new = copy.deepcopy(self)
        for k, v in changes.items():
            setattr(new, k, v)
        new.raw.update(raw_updates)
        new.raw.setdefault("created_by", "nla")
        new.raw["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return new


class _Reader:
    """Dotted-key access with errors that name the file and the key."""

    def __init__(self, data: dict, source: str) -> None:
        self.data, self.source = data, source

    def get(self, key: str, *, required: bool = True) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if required:
                    raise NLAConfigError(f"{self.source}: key {key!r} is missing. Fix: add it (see NLA_SPEC sidecar).")
                return None
            node = node[part]
        return node

    def integer(self, key: str, *, required: bool = True) -> int | None:
        v = self.get(key, required=required)
        if v is None and not required:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise NLAConfigError(f"{self.source}: key {key!r} is {v!r}; expected an integer. Fix: write a whole "
                                 "number (see the release's sidecars).")
        return v


def _scale(r: _Reader, key: str, d: int, *, required: bool, default: float | None = None) -> float | None:
    """A scale as the release resolves it: a number, a number written as a string, the sentinel 'sqrt_d_model', or
    null / 'raw' / 'none' (no normalisation, refused where a number is needed)."""
    v = r.get(key, required=False) if _has_key(r.data, key) else default
    if v == SQRT_D:
        return math.sqrt(d)
    if isinstance(v, str) and v.strip().lower() in ("raw", "none"):
        v = None
    elif isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass  # refused below with the key named
    if v is None:
        if required:
            raise NLAConfigError(f"{r.source}: key {key!r} is missing or null; the AV needs the norm it was trained "
                                 "with (the release's Qwen-7B AV: 150). Fix: set it from the checkpoint's card.")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise NLAConfigError(f"{r.source}: key {key!r} is {v!r}; expected a positive number or '{SQRT_D}'. "
                             "Fix: write the number from the checkpoint's card.")
    return float(v)


def _has_key(data: dict, key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _layer(r: _Reader, role: Role, folder: str | Path | None) -> tuple[int, tuple[str, ...]]:
    """K and the keys it was read from, as the release reads it (LAYER_KEYS, first found wins). An AR's K is checked
    against its config.json (which keeps K + 1 blocks); an AR sidecar that names none takes K from there."""
    from nla.hfconfig import stated_int

    found = [k for k in LAYER_KEYS if _has_key(r.data, k) and (role == "ar" or "." not in k)]
    layer = r.integer(found[0]) if found else None
    blocks = stated_int(folder, "num_hidden_layers") if folder is not None and role == "ar" else None
    if layer is None and role == "ar" and blocks is not None:
        if r.source not in _said:
            _said.add(r.source)
            log.warning("%s names no layer; K = %d, from config.json's %d blocks (as the release's loader reads an "
                        "AR).", r.source, blocks - 1, blocks)
        return blocks - 1, ()
    if layer is None:
        where = " or ".join(repr(k) for k in LAYER_KEYS) if role == "ar" else "'extraction_layer_index'"
        raise NLAConfigError(f"{r.source}: no layer key ({where}). Fix: add extraction_layer_index: K, the block "
                             "whose output the pair reads.")
    if blocks is not None and blocks != layer + 1:
        raise NLAConfigError(f"{r.source}: key {found[0]!r} says K = {layer}, so the AR keeps {layer + 1} blocks, but "
                             f"config.json has {blocks}. Fix: use the sidecar shipped with this AR.")
    return layer, tuple(found)


def _put(data: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        node = data.get(part)
        data[part] = node = dict(node) if isinstance(node, dict) else {}
        data = node
    data[last] = value


def _tokens(r: _Reader, role: Role | None) -> TokenMeta | None:
    """The marker fields. An AV needs them; an AR sidecar may hold only `critic_suffix_ids` (the release's AR
    sidecars do), which NLAMeta.critic_suffix_ids reads from `raw`."""
    t = r.get("tokens", required=(role == "av"))
    if t is None:
        return None
    if not isinstance(t, dict):
        raise NLAConfigError(f"{r.source}: key 'tokens' must be a mapping. Fix: restore it from the release.")
    suffix = t.get("critic_suffix_ids")
    if suffix is not None and (not isinstance(suffix, list) or not all(isinstance(i, int) for i in suffix)):
        raise NLAConfigError(f"{r.source}: key 'tokens.critic_suffix_ids' must be a list of token ids. Fix: restore it "
                             "or delete the key.")
    if role != "av" and "injection_char" not in t:
        return None
    char = r.get("tokens.injection_char")
    if not isinstance(char, str) or len(char) == 0:
        raise NLAConfigError(f"{r.source}: key 'tokens.injection_char' is {char!r}; expected the marker character. "
                             "Fix: `nla init` picks one for a tokenizer.")
    return TokenMeta(
        injection_char=char,
        injection_token_id=r.integer("tokens.injection_token_id"),
        injection_left_neighbor_id=r.integer("tokens.injection_left_neighbor_id"),
        injection_right_neighbor_id=r.integer("tokens.injection_right_neighbor_id"),
        critic_suffix_ids=suffix,
    )


def _template(r: _Reader, role: Role, *, required: bool) -> str | None:
    pts = r.get("prompt_templates", required=required) or {}
    legacy = {"av": "actor", "ar": "critic"}[role]
    tpl = pts.get(role, pts.get(legacy))
    placeholder = "{injection_char}" if role == "av" else "{explanation}"
    if tpl is None:
        if required:
            raise NLAConfigError(f"{r.source}: key 'prompt_templates.{role}' is missing. Fix: copy it from the "
                                 "release's sidecar for this checkpoint.")
        return None
    if not isinstance(tpl, str) or tpl.count(placeholder) != 1:
        raise NLAConfigError(f"{r.source}: key 'prompt_templates.{role}' must contain {placeholder} exactly once. "
                             "Fix: restore the template shipped with the checkpoint.")
    return tpl
