"""The toy kit: built once per run, in the release layout, meeting its quality bars on held-out documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nla import NLAClient, NLACritic
from nla.extract import Extractor
from nla.extract_config import ExtractConfig
from nla.meta import NLAMeta
from nla.toy.kit import ToyRecipe, kit_dir
from nla.toy.corpus import generate_corpus, teacher_explanation


def test_quality_bars_and_the_docs_figures(toy_kit):
    """The kit meets its bars, and docs/training.md quotes this kit's report.json, figure for figure."""
    report = json.loads((toy_kit / "report.json").read_text())
    docs = (Path(__file__).parents[2] / "docs" / "training.md").read_text(encoding="utf-8")
    quoted = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[1] for row in docs.splitlines()
              if row.startswith(("| AR `fve_nrm`", "| round trip `fve_nrm`", "| shuffled control"))}
    measured = {"AR `fve_nrm` on teacher explanations": f"{report['ar_fve']:.3f}",
                "round trip `fve_nrm` (AV greedy -> AR)": f"{report['roundtrip_fve']:.3f}",
                "shuffled control (explanations of other vectors)": f"{report['shuffled_fve']:.3f}"}
    assert quoted == measured, f"docs/training.md quotes {quoted}, the kit's report.json says {measured}. Fix: copy " \
                               f"the report's figures into the table under 'The toy kit'."
    assert report["ar_fve"] > 0.5
    assert report["roundtrip_fve"] > 0.3
    assert report["roundtrip_fve"] - report["shuffled_fve"] >= 0.3
    assert report["ok_fraction"] > 0.95
    assert report["av_sft"]["last_loss"] < report["av_sft"]["first_loss"]


def test_layout_and_sidecars(toy_kit):
    for sub in ("base", "av", "ar"):
        assert (toy_kit / sub / "config.json").is_file()
    av, ar = NLAMeta.load(toy_kit / "av"), NLAMeta.load(toy_kit / "ar")
    assert (av.role, av.stage, ar.role, ar.stage) == ("av", "sl", "ar", "sl")
    assert av.raw["parent_checkpoints"] == ["toy/base"] and av.raw["training"]["loss_type"] == "response_ce"
    assert (toy_kit / "ar" / "value_head.safetensors").is_file()
    assert kit_dir() == toy_kit  # keyed by the recipe: same recipe, same folder
    assert kit_dir(ToyRecipe(seed=1)) != toy_kit


def test_av_names_the_topic_of_fresh_documents(toy_kit):
    client, critic = NLAClient(toy_kit / "av"), NLACritic(toy_kit / "ar")
    docs = generate_corpus(12, 999)
    ext = Extractor.from_pretrained(toy_kit / "base", ExtractConfig(layer=client.meta.layer, positions_per_doc=2,
                                                                    min_position=8, context_chars=10_000))
    rows = ext([d.text for d in docs], [d.doc_id for d in docs])
    said = client.generate_batch(rows["vector"], temperature=0, max_new_tokens=64)
    topics = {d.doc_id: d.topic for d in docs}
    hits = [topics[doc] in s for doc, s in zip(rows["doc_id"], said)]
    assert np.mean(hits) > 0.7, list(zip(rows["doc_id"], said))
    mse, _ = critic.score_batch(said, rows["vector"])
    by_id = {d.doc_id: d for d in docs}
    teacher = [teacher_explanation(by_id[i], c) for i, c in zip(rows["doc_id"], rows["context"])]
    shuffled, _ = critic.score_batch(teacher[1:] + teacher[:1], rows["vector"])
    assert mse.mean() < shuffled.mean()


def test_demo_runs(toy_kit, tmp_path):
    p = subprocess.run([sys.executable, "-m", "nla.cli.main", "demo", "--docs", "40", "--shards", "2", "--dir",
                        str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    for part in ("worst-reconstructed", "keyword search", "search by text", "labeled activations"):
        assert part in p.stdout
    assert f"explore it in a browser: `nla serve --lake {tmp_path / 'lake'}`" in p.stdout
