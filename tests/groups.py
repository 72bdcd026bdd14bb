"""Test groups that need an optional install (Chromium, vLLM, Triton): where `python3 dev.py test` runs the whole suite
it sets NLA_REQUIRE_GROUPS=1, and a missing install fails the test instead of skipping it, so a group the README says
runs cannot silently not run. Selected by hand (`pytest tests/serve`), a missing install skips with the reason."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRED = os.environ.get("NLA_REQUIRE_GROUPS") == "1"


def missing(what: str, install: str) -> None:
    """Skip (or, under `dev.py test`, fail) because `what` is not installed; `install` says how to get it."""
    message = f"{what} is not installed: {install}"
    if REQUIRED:
        pytest.fail(f"this group must run under `python3 dev.py test`, but {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def need_module(name: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python package `{name}`", install)
        raise  # unreachable: missing() raises
