"""The real `nla` command in a subprocess: help that teaches, explain/score/init; bad input -> one line, exit 2 (its
entry point in this process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

NLA = [sys.executable, "-m", "nla.cli.main"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([*NLA, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.mark.parametrize("cmd", [[], ["explain"], ["score"], ["init"], ["toy"], ["toy", "build"], ["demo"]])
def test_help_teaches(cmd):
    out = run(*cmd, "--help").stdout
    assert "usage: nla" in out
    if cmd and cmd != ["toy", "build"]:
        assert "example" in out


def test_label_help_lists_config_keys_and_corpus_formats():
    """Every LabelConfig key with its default, from the dataclasses, and each corpus format."""
    from nla.configdoc import section_defaults
    from nla.labeling.config import LabelConfig

    out = run("label", "--help").stdout
    for key, _tp, default, _comment in section_defaults(LabelConfig):
        assert f"  {key}={default}" in out, key
    assert "text_column='text'" in out and "column (parquet, delta, hf) or JSON key (jsonl)" in out
    for fmt in ("*.jsonl", "*.parquet", "*.txt", "Delta", "HF", '"text"', "id_column="):
        assert fmt in out, fmt


def test_explain_and_score(pair, tmp_path):
    av, ar = pair
    v = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    out = run("explain", "--av", str(av), "--ar", str(ar), "--vectors", str(tmp_path / "v.npy"),
              "--max-new-tokens", "6").stdout
    assert "row 0" in out and "row 1" in out and "status" in out
    out = run("score", "--ar", str(ar), "--explanation", "a storm in oslo", "--vectors", str(tmp_path / "v.npy"),
              "--row", "1").stdout
    assert "mse_nrm" in out and "cos" in out


def test_explain_text_through_base(pair, make_base):
    out = run("explain", "--av", str(pair[0]), "--text", "a heavy storm moved over oslo .", "--positions", "2,3",
              "--base", str(make_base("llama")), "--max-new-tokens", "4").stdout
    rows = [ln.split()[0] for ln in out.splitlines()[2:]]
    assert rows == ["2", "3"], out


def test_init_command(make_base, tmp_path):
    run("init", "--base", str(make_base("qwen2")), "--layer", "0", "--out", str(tmp_path / "q"))
    assert (tmp_path / "q" / "av" / "nla_meta.yaml").is_file() and (tmp_path / "q" / "ar" / "value_head.safetensors"
                                                                      ).is_file()


@pytest.mark.parametrize("args, match", [
    (["explain", "--av", "{av}", "--vectors", "{tmp}/missing.npy"], "no such file"),
    (["explain", "--av", "{av}", "--vectors", "{tmp}/wrong_d.npy"], "d_model=32"),
    (["explain", "--av", "{av}", "--vectors", "{tmp}/nan.npy"], "NaN"),
    (["explain", "--av", "{av}", "--vectors", "{tmp}/v.txt"], "unsupported format"),
    (["explain", "--av", "{av}", "--text", "   "], "--text is empty"),
    (["explain", "--av", "{av}", "--vectors", "{tmp}/ok.npy", "--prompt", "no placeholder"], "<INJECT>"),
    (["explain", "--av", "{ar}", "--vectors", "{tmp}/ok.npy"], "role is 'ar'"),
    (["explain", "--av", "{tmp}", "--vectors", "{tmp}/ok.npy"], "config.json|sidecar"),
    (["score", "--ar", "{ar}", "--explanation", "", "--vectors", "{tmp}/ok.npy"], "empty"),
    (["score", "--ar", "{ar}", "--explanation", "x", "--vectors", "{tmp}/ok.npy", "--row", "9"], "--row"),
    (["init", "--base", "{tmp}", "--layer", "1", "--out", "{tmp}/o"], "config.json"),
])
def test_bad_input_one_line_exit_2(pair, tmp_path, args, match, capsys):
    """Each refused with exit 2 and one line. `nla`'s entry point called in this process: a Python start with torch
    per case is ~2 CPU-seconds; the same refusals through the installed command in its own process:
    tests/reliability/test_bad_input.py::test_the_installed_cli_agrees."""
    from nla.cli.main import main

    np.save(tmp_path / "missing_not.npy", np.ones(3))
    np.save(tmp_path / "wrong_d.npy", np.ones((2, 31), np.float32))
    np.save(tmp_path / "nan.npy", np.full((1, 32), np.nan, np.float32))
    np.save(tmp_path / "ok.npy", np.ones((1, 32), np.float32))
    (tmp_path / "v.txt").write_text("1 2 3")
    filled = [a.format(av=pair[0], ar=pair[1], tmp=tmp_path) for a in args]
    code = main(filled)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    import re

    assert re.search(match, lines[0]), lines[0]


def test_console_script_installed():
    assert shutil.which("nla") or os.path.exists(os.path.join(os.path.dirname(sys.executable), "nla"))
