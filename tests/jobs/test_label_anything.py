"""The README's walkthrough, end to end on the toy kit with real Ray, Delta, DuckDB and `datasets`: an SAE-style
decoder matrix (made here, with three rows planted at low norm) is imported, labeled, flagged and exported by the
README's four commands; then a broken AV (its injection scale cut to nothing, so it writes its fallback texts
whatever the vector) labels the same vectors, and the template flag and the job's warning catch it."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from nla.lake.query import LakeQuery
from nla.lake.store import Lake

ROOT = Path(__file__).resolve().parents[2]
LATENTS, LOW = 128, (17, 70, 101)  # decoder rows; rows planted at 5% of unit norm
# the columns of Neuronpedia's Explanation table (apps/webapp/prisma/schema.prisma, hijohnnylin/neuronpedia)
NP_EXPLANATION_COLUMNS = {"id", "modelId", "layer", "index", "embedding", "description", "authorId",
                          "triggeredByUserId", "notes", "scoreV1", "scoreV2", "umap_x", "umap_y", "umap_cluster",
                          "umap_log_feature_sparsity", "typeName", "explanationModelName", "createdAt", "updatedAt"}


def readme_walkthrough() -> list[str]:
    """The commands of the README's block that starts with `nla toy sae`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```\nnla toy sae") + 4
    block = text[start:text.index("```", start)]
    return [ln.split("  #")[0].strip() for ln in block.strip().splitlines()]


def nla(cwd: Path, line: str, env: dict, capsys) -> subprocess.CompletedProcess:
    """Run one `nla` command line in `cwd`: the labeling job in its own process (it hands over to the Ray program),
    the others in this one (the same entry point, without a second interpreter's start-up)."""
    args = shlex.split(line)
    assert args[0] == "nla", line
    if args[1] == "label":
        return subprocess.run([sys.executable, "-m", "nla.cli.main", *args[1:]], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
    from nla.cli.main import main

    here = os.getcwd()
    os.chdir(cwd)
    try:
        rc = main(args[1:])
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def test_sae_latents_imported_labeled_flagged_exported(tmp_path, toy_kit, capsys, monkeypatch):
    from safetensors.numpy import save_file

    from nla.toy.sae import write_toy_sae

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "PYTHONPATH": str(ROOT)}
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE"):
        monkeypatch.setenv(k, env[k])
    steps = readme_walkthrough()
    assert [s.split()[:2] for s in steps] == [["nla", "toy"], ["nla", "import"], ["nla", "label"], ["nla", "quality"],
                                              ["nla", "export"]]
    # the decoder the README's first line makes, smaller, with three latents planted at low norm
    file = tmp_path / shlex.split(steps[0])[shlex.split(steps[0]).index("--out") + 1]
    from safetensors.numpy import load_file

    w = load_file(str(write_toy_sae(tmp_path / "made.safetensors", latents=LATENTS)))
    w["W_dec"][list(LOW)] *= 0.05
    save_file(w, str(file))

    outs = {}
    for line in steps[1:]:
        p = nla(tmp_path, line, env, capsys)
        assert p.returncode == 0, (line, p.stdout[-3000:], p.stderr[-6000:])
        outs[line.split()[1]] = p.stdout
    assert re.search(rf"imported {LATENTS} vectors \(d=128\) from toy-sae\.safetensors:W_dec rows 0:{LATENTS} as "
                     r"source sae:toy", outs["import"])
    summary = dict(re.findall(r"^  (\w+) +(\S+)$", outs["label"], re.M))
    assert summary["explanations"] == str(LATENTS) and summary["flag_low_norm"] == "3", outs["label"]
    assert summary["flag_degenerate"] == summary["flag_truncated"] == summary["flag_no_tags"] == "0"
    assert int(summary["flag_template"]) <= LATENTS // 20  # the clean pair: few template texts (docs/quality.md)
    assert "warning:" not in outs["label"]

    lake = Lake(tmp_path / "lake")
    with LakeQuery(lake) as q:
        rows = q.run("SELECT position, source, flags, status, mse FROM labels ORDER BY position", limit=None).to_pylist()
        quality = q.run("SELECT * FROM quality", limit=None).to_pylist()
    assert [r["position"] for r in rows] == list(range(LATENTS)) and {r["source"] for r in rows} == {"sae:toy"}
    assert {r["position"] for r in rows if "low_norm" in r["flags"]} == set(LOW)
    assert all(r["status"] == "ok" and r["mse"] is not None for r in rows)
    assert len(quality) == 1 and quality[0]["explanations"] == LATENTS and quality[0]["low_norm"] == 3
    assert "sae:toy" in outs["quality"] and f"of {LATENTS} explanations flagged" in outs["quality"]

    # the HF export, read back with the consumer's own library; its card says what it holds
    from datasets import load_dataset

    folder = tmp_path / shlex.split(steps[-1])[shlex.split(steps[-1]).index("--out") + 1]
    ds = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == LATENTS and ds["position"] == list(range(LATENTS))
    assert sorted(ds.filter(lambda r: "low_norm" in r["flags"])["position"]) == sorted(LOW)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nconfigs:\n- config_name: default") and f"| sae:toy | {LATENTS} |" in card
    assert "| low_norm | 3 |" in card and '"sampling": {"max_new_tokens": 64' in card

    # Neuronpedia's format: their columns only, one line per unflagged latent, the latent index as their index
    p = nla(tmp_path, "nla export neuronpedia --out np --model-id toy --source-id 1-nla-toy-sae --author-id tester",
            env, capsys)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for f in sorted((tmp_path / "np/toy/1-nla-toy-sae/explanations").glob("batch-*.jsonl.gz"))
             for x in gzip.open(f, "rt", encoding="utf-8")]
    clean = [r for r in rows if not r["flags"]]
    assert len(lines) == len(clean) and {tuple(sorted(x)) for x in lines} == {tuple(sorted(lines[0]))}
    assert set(lines[0]) <= NP_EXPLANATION_COLUMNS
    assert [x["index"] for x in lines] == [str(r["position"]) for r in clean]
    assert {(x["modelId"], x["layer"], x["authorId"]) for x in lines} == {("toy", "1-nla-toy-sae", "tester")}
    assert f"left out: {LATENTS - len(clean)} flagged" in p.stdout

    # planted: a broken AV that ignores its input writes the same few texts for unrelated vectors
    broken = tmp_path / "broken-av"
    shutil.copytree(toy_kit / "av", broken)
    meta = yaml.safe_load((broken / "nla_meta.yaml").read_text(encoding="utf-8"))
    meta["extraction"]["injection_scale"] = 1e-3
    (broken / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    p = nla(tmp_path, f"nla label --from-activations models.av={broken}", env, capsys)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = dict(re.findall(r"^  (\w+) +(\S+)$", p.stdout, re.M))
    assert int(summary["flag_template"]) > LATENTS // 2, p.stdout
    assert re.search(rf"^warning: \d+ of {LATENTS} explanations \(\d+%\) are flagged \(template \d+", p.stdout, re.M)
    with LakeQuery(lake) as q:
        per = q.run("SELECT av, template, explanations FROM quality ORDER BY template", limit=None).to_pylist()
    assert [r["av"] for r in per] == [f"{toy_kit.name}/av", f"{tmp_path.name}/broken-av"]
