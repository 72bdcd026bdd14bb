"""`nla/` never imports Ray: the library stays usable without a cluster (jobs/ and serve/ wire it into Ray)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_library_source_does_not_import_ray():
    offenders = [str(p) for p in (ROOT / "nla").rglob("*.py")
                 if re.search(r"^\s*(import ray|from ray)", p.read_text(), re.M)]
    assert offenders == []


def test_importing_the_library_loads_no_ray():
    code = ("import sys, nla, nla.client, nla.extract, nla.toy.build, nla.cli.main, nla.train.sft; "
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
