"""The docs site builds in strict mode (a broken link or a page missing from the nav fails), and the generated pages
(docs/performance.md from bench/results/*.json, docs/configuration.md from the config dataclasses) are up to date."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, **kw)


def test_mkdocs_build_strict(tmp_path):
    # mkdocs and mkdocs-material are in the dev extra that dev.py installs: a missing one fails here, not skips
    r = _run("-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "performance" / "index.html").exists()


@pytest.mark.parametrize("script", ["bench/report.py", "bench/config_reference.py"])
def test_generated_pages_up_to_date(script):
    r = _run(script, "--check")
    assert r.returncode == 0, r.stderr


def test_performance_numbers_are_the_files():
    """Every number in every results file (outside `history`) is on the page, as bench/report.py formats it, and
    each file's command and date when it records them."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("report", ROOT / "bench/report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    page = (ROOT / "docs/performance.md").read_text()

    def numbers(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k != "history":
                    yield from numbers(x)
        elif isinstance(v, list):
            if len(v) > 8 and all(isinstance(x, (int, float, str)) for x in v):
                yield from numbers([v[0], v[-1]])
            else:
                for x in v:
                    yield from numbers(x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield v

    for f in sorted((ROOT / "bench/results").glob("*.json")):
        d = json.loads(f.read_text())
        for key in ("command", "date"):
            if isinstance(d.get(key), str):
                assert d[key] in page, (f.name, key)
        missing = [n for n in numbers(d) if report.fmt(n) not in page]
        assert not missing, (f.name, missing[:5])
