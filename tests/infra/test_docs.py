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
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    r = _run("-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "performance" / "index.html").exists()


@pytest.mark.parametrize("script", ["bench/report.py", "bench/config_reference.py"])
def test_generated_pages_up_to_date(script):
    r = _run(script, "--check")
    assert r.returncode == 0, r.stderr


def test_performance_numbers_are_the_files():
    """Spot check: the pipeline benchmark's end-to-end seconds appear as the JSON holds them."""
    import json

    d = json.loads((ROOT / "bench/results/pipeline.json").read_text())
    page = (ROOT / "docs/performance.md").read_text()
    assert f"{d['runs'][0]['e2e_seconds']:.4g}" in page
    assert d["command"] in page and d["date"] in page
