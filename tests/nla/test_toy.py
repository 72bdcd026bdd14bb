"""The toy kit: built once per run, in the release layout, meeting its quality bars on held-out documents."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from nla import NLAClient, NLACritic
from nla.extract import ExtractConfig, Extractor
from nla.meta import NLAMeta
from nla.toy.build import ToyRecipe, kit_dir
from nla.toy.corpus import generate_corpus, teacher_explanation


def test_quality_bars(toy_kit):
    report = json.loads((toy_kit / "report.json").read_text())
    print({k: report[k] for k in ("ar_fve", "roundtrip_fve", "shuffled_fve", "build_seconds")})
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
