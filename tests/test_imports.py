"""`nla/` never imports Ray: the library stays usable without a cluster (jobs/ and serve/ wire it into Ray, installed
as nla.jobs and nla.serve); every package folder is installed under the one `nla` namespace."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_library_source_does_not_import_ray():
    offenders = [str(p) for p in (ROOT / "nla").rglob("*.py")
                 if re.search(r"^\s*(import ray|from ray)", p.read_text(), re.M)]
    assert offenders == []


def test_library_source_does_not_import_the_ray_programs():
    offenders = [str(p) for p in (ROOT / "nla").rglob("*.py")
                 if re.search(r"^\s*(import|from) nla\.(jobs|serve)\b", p.read_text(), re.M)]
    assert offenders == []


def folder_of(package: str, package_dir: dict[str, str]) -> str:
    """The repository folder setuptools builds `package` from: its longest mapped prefix, then the rest."""
    parts = package.split(".")
    n = next(n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in package_dir)
    return str(pathlib.PurePosixPath(package_dir[".".join(parts[:n])], *parts[n:]))


def test_every_package_folder_installs_under_nla():
    """pyproject.toml lists the packages by hand (package-dir maps jobs/ to nla.jobs ...): a new folder is listed."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.parent.relative_to(ROOT).as_posix() for top in ("nla", "jobs", "serve", "schemas")
               for p in (ROOT / top).rglob("__init__.py")}
    assert {folder_of(p, tool["package-dir"]) for p in tool["packages"]} == folders
    assert all(p == "nla" or p.startswith("nla.") for p in tool["packages"])


def test_importing_the_library_loads_no_ray():
    code = ("import sys, nla, nla.client, nla.extract, nla.toy.build, nla.cli.main, nla.train.sft; "
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_label_drivers_and_reader_load_no_torch():
    """The job's driver plans and commits, and the reader parses shards: neither needs torch, whose import costs
    each of those processes about 2 CPU-seconds at every job start (the model stages import it in __init__)."""
    code = ("import sys, nla.jobs.label, nla.jobs.entry, nla.stages.read, nla.labeling.plan, nla.labeling.committer, "
            "nla.pair, nla.checks, nla.toy.kit; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
