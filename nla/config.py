"""Typed configs from YAML: nested dataclasses, unknown keys rejected, `key=value` overrides from the command line.

Defaults live only in the dataclasses. `load_config(LabelConfig, "jobs/configs/toy.yaml", ["input=./corpus",
"sampling.samples=4"])` returns a LabelConfig or raises NLAConfigError naming the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nla.errors import NLAConfigError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise NLAConfigError(f"config {p}: no such file. Fix: pass one of jobs/configs/*.yaml or your own copy.")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise NLAConfigError(f"config {p}: not UTF-8 text (byte {e.start}). Fix: save it as UTF-8.") from None
        except yaml.YAMLError as e:
            raise NLAConfigError(f"config {p}: not valid YAML ({str(e).splitlines()[0]}). Fix: check indentation.")
        if not isinstance(data, dict):
            raise NLAConfigError(f"config {p}: expected a mapping of keys, got {type(data).__name__}. Fix: write "
                                 "`key: value` lines, as in jobs/configs/toy.yaml.")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise NLAConfigError(f"override {item!r}: expected key=value. Fix: write it as e.g. input=./corpus or "
                                 "sampling.samples=4.")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise NLAConfigError(f"override {item!r}: {part!r} is not a section. Fix: drop the dotted part.")
        node[parts[-1]] = _override_value(raw)
    return build(cls, data, source=source)


def _override_value(raw: str) -> Any:
    """KEY=VALUE's value as YAML reads it (4 -> int, true -> bool, [a, b] -> list); text that is not YAML at all, such
    as ray_address=[::1]:6379, is the string as written (its key's type then decides whether it fits)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def build(cls: type[T], data: dict[str, Any], *, source: str, prefix: str = "") -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, fields, n=1)
        hint = f" Did you mean '{prefix}{close[0]}'?" if close else f" Known keys: {', '.join(fields)}."
        raise NLAConfigError(f"config {source}: unknown key '{prefix}{k}'.{hint} Fix: correct or remove the key.")
    kwargs = {}
    for name, value in data.items():
        factory = fields[name].default_factory
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]) and factory is not dataclasses.MISSING:
            value = {**dataclasses.asdict(factory()), **value}  # a section keeps its own defaults for keys not given
        kwargs[name] = _coerce(hints[name], value, source=source, key=f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise NLAConfigError(f"config {source}: {prefix or 'top level'}: {e}") from e


def _coerce(tp: Any, value: Any, *, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise NLAConfigError(f"config {source}: key {key!r} is a section; got {value!r}. Fix: set its keys, "
                                 f"e.g. {key}.KEY=VALUE.")
        return build(tp, value, source=source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source=source, key=key) if len(inner) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            raise NLAConfigError(f"config {source}: key {key!r} is {value!r}. Fix: choose one of {list(args)}.")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise NLAConfigError(f"config {source}: key {key!r} expects a list; got {value!r}. Fix: write [a, b].")
        return list(value) if origin is list else tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise NLAConfigError(f"config {source}: key {key!r} expects a mapping; got {value!r}. Fix: write {{k: v}}.")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise NLAConfigError(f"config {source}: key {key!r} is {value!r}; expected {tp.__name__}. Fix: give a "
                             f"{tp.__name__} value.")
    return value


def as_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
