"""Sidecar: round trip, legacy names, dataset sidecars, and every validation failure with a clear message."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import yaml

from nla.errors import NLAConfigError
from nla.meta import NLAMeta
from tests.conftest import SHORT_AV


def _sidecar(folder) -> dict:
    return yaml.safe_load((folder / "nla_meta.yaml").read_text(encoding="utf-8"))


def _write(folder, data) -> None:
    (folder / "nla_meta.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_written_sidecar_has_release_fields(pair, tokenizer):
    av, ar = _sidecar(pair[0]), _sidecar(pair[1])
    assert av["kind"] == "nla_model" and av["schema_version"] == 2 and av["role"] == "av" and av["stage"] == "init"
    assert av["extraction_layer_index"] == 1 and av["d_model"] == 32
    assert av["extraction"]["injection_scale"] > 0 and av["extraction"]["mse_scale"] == pytest.approx(math.sqrt(32))
    assert ar["extraction"]["injection_scale"] is None and ar["critic"]["extraction_layer_index"] == 1
    t = av["tokens"]
    assert t["injection_char"] == "㈎" and tokenizer.encode("㈎", add_special_tokens=False) == [t["injection_token_id"]]
    assert "{injection_char}" in av["prompt_templates"]["av"] and "{explanation}" in av["prompt_templates"]["ar"]
    assert t["critic_suffix_ids"] and "created_at" in av


def test_round_trip_keeps_unknown_keys(pair, tmp_path):
    data = _sidecar(pair[0])
    data["future_field"] = {"nested": [1, 2]}
    data["extraction"]["something_new"] = "kept"
    _write(tmp_path, data)
    meta = NLAMeta.load(tmp_path)
    out = meta.to_dict()
    assert out["future_field"] == {"nested": [1, 2]} and out["extraction"]["something_new"] == "kept"
    meta.save(tmp_path / "again")
    assert NLAMeta.load(tmp_path / "again").to_dict() == out


def test_legacy_actor_critic_names_load_and_write_back_unchanged(pair, tmp_path, tokenizer):
    data = _sidecar(pair[1])
    data["role"] = "critic"
    data["prompt_templates"] = {"actor": data["prompt_templates"]["av"], "critic": data["prompt_templates"]["ar"]}
    del data["extraction_layer_index"]
    data["critic"] = {"num_hidden_layers": 1}  # schema v1's spelling of K (the AR folder has K + 1 = 2 blocks)
    _write(tmp_path, data)
    shutil.copy(pair[1] / "config.json", tmp_path / "config.json")
    meta = NLAMeta.load(tmp_path)
    assert meta.role == "ar" and meta.layer == 1 and meta.ar_template.startswith("Summary")
    meta.validate(tokenizer)
    written = meta.to_dict()  # read and written back: the legacy spellings stay, nothing new is added
    assert written["critic"] == {"num_hidden_layers": 1} and "extraction_layer_index" not in written
    assert set(written["prompt_templates"]) == {"actor", "critic"} and written["role"] == "ar"


def test_dataset_sidecar(tmp_path):
    _write(tmp_path, {"kind": "nla_dataset", "schema_version": 1, "extraction": {
        "base_model": "Qwen/Qwen2.5-7B-Instruct", "d_model": 3584, "layer_index": 20, "norm": "none",
        "corpus": "fineweb", "positions_per_doc": 10}})
    meta = NLAMeta.load(tmp_path)
    assert (meta.kind, meta.d_model, meta.layer, meta.role) == ("nla_dataset", 3584, 20, None)
    assert meta.to_dict()["extraction"]["corpus"] == "fineweb"


def test_sqrt_d_sentinel(pair, tmp_path):
    data = _sidecar(pair[1])
    data["extraction"]["mse_scale"] = "sqrt_d_model"
    _write(tmp_path, data)
    assert NLAMeta.load(tmp_path).mse_scale == pytest.approx(math.sqrt(32))


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["tokens"].update(injection_token_id=5), "tokenizer drift"),
    (lambda d: d["tokens"].update(injection_char="zz"), "tokens.injection_char"),
    (lambda d: d["tokens"].update(injection_left_neighbor_id=3), "neighbor"),
    (lambda d: d["prompt_templates"].update(av=SHORT_AV + " {injection_char}"), "prompt_templates.av"),
    (lambda d: d["prompt_templates"].update(av="<concept>{injection_char}</concept> ㈎"), "occurs 2 times"),
])
def test_validation_failures(pair, tmp_path, tokenizer, mutate, match):
    data = _sidecar(pair[0])
    mutate(data)
    _write(tmp_path, data)
    with pytest.raises(NLAConfigError, match=match) as e:
        NLAMeta.load(tmp_path).validate(tokenizer)
    assert "nla_meta.yaml" in str(e.value) and "Fix" in str(e.value)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["extraction"].update(mse_scale=None), "mse_scale"),
    (lambda d: d["extraction"].update(mse_scale="big"), "mse_scale"),
    (lambda d: d.update(role="judge"), "role"),
    (lambda d: d.update(kind="weights"), "kind"),
    (lambda d: d.update(d_model="wide"), "d_model"),
    (lambda d: d.pop("prompt_templates"), "prompt_templates"),
])
def test_bad_ar_sidecars(pair, tmp_path, mutate, match):
    data = _sidecar(pair[1])
    mutate(data)
    _write(tmp_path, data)
    with pytest.raises(NLAConfigError, match=match):
        NLAMeta.load(tmp_path)


def test_av_needs_injection_scale(pair, tmp_path):
    data = _sidecar(pair[0])
    data["extraction"]["injection_scale"] = None
    _write(tmp_path, data)
    with pytest.raises(NLAConfigError, match="injection_scale"):
        NLAMeta.load(tmp_path)


def test_missing_and_malformed_sidecar(tmp_path):
    with pytest.raises(NLAConfigError, match="no sidecar"):
        NLAMeta.load(tmp_path)
    (tmp_path / "nla_meta.yaml").write_bytes(b"kind: [unclosed")
    with pytest.raises(NLAConfigError, match="YAML"):
        NLAMeta.load(tmp_path)
    (tmp_path / "nla_meta.yaml").write_bytes(b"\xff\xfe bad")
    with pytest.raises(NLAConfigError, match="UTF-8"):
        NLAMeta.load(tmp_path)


# ---- the AR's layer, every spelling the release reads (each holds K; config.json of the AR has K + 1 blocks) -------

LAYER_SPELLINGS = {
    "v2 top level": {"extraction_layer_index": 1},
    "v2 critic": {"critic": {"extraction_layer_index": 1}},
    "v1 critic": {"critic": {"num_hidden_layers": 1}},
    "inference docs' ar": {"ar": {"num_hidden_layers": 1}},
    "ar extraction_layer_index": {"ar": {"extraction_layer_index": 1}},
    "none": {},
}


def _ar_with_layer(pair, folder, spelling: dict):
    shutil.copytree(pair[1], folder)
    data = _sidecar(pair[1])
    for k in ("extraction_layer_index", "critic"):
        data.pop(k, None)
    _write(folder, {**data, **spelling})
    return folder


@pytest.fixture(scope="module")
def reference_scores(pair):
    from nla.client import NLACritic

    critic = NLACritic(pair[1])
    v = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    texts = ["The text is about rain.", "names leo", "a city"]
    mse, cos = critic.score_batch(texts, v)
    return texts, v, mse.numpy(), cos.numpy()


@pytest.mark.parametrize("name", list(LAYER_SPELLINGS))
def test_every_ar_layer_spelling_loads_and_scores_the_same(pair, tmp_path, reference_scores, caplog, name):
    from nla.client import NLACritic

    folder = _ar_with_layer(pair, tmp_path / "ar", LAYER_SPELLINGS[name])
    with caplog.at_level(logging.WARNING, logger="nla.meta"):
        critic = NLACritic(folder)
        NLAMeta.load(folder)  # said once per sidecar, not at every load
    assert critic.meta.layer == 1
    said = [r.getMessage() for r in caplog.records if "names no layer" in r.getMessage()]
    assert said == (["%s names no layer; K = 1, from config.json's 2 blocks (as the release's loader reads an AR)."
                     % (folder / "nla_meta.yaml")] if name == "none" else [])
    texts, v, mse, cos = reference_scores
    got_mse, got_cos = critic.score_batch(texts, v)
    assert np.array_equal(got_mse.numpy(), mse) and np.array_equal(got_cos.numpy(), cos)
    written = critic.meta.to_dict()
    for key, value in LAYER_SPELLINGS[name].items():
        assert written[key] == value  # written back under the spelling it was read with


def test_ar_layer_disagreeing_with_config_is_refused_naming_both(pair, tmp_path):
    folder = _ar_with_layer(pair, tmp_path / "ar", {"critic": {"num_hidden_layers": 2}})  # K + 1: not K
    with pytest.raises(NLAConfigError, match=r"'critic.num_hidden_layers' says K = 2, so the AR keeps 3 blocks, but "
                                             r"config.json has 2\. Fix: use the sidecar shipped with this AR"):
        NLAMeta.load(folder)


def test_sidecars_made_here_carry_the_release_v2_keys(pair):
    for folder in pair:
        meta = NLAMeta.load(folder)
        out = meta.to_dict()
        assert out["extraction_layer_index"] == 1 and out["schema_version"] == 2
        assert set(out["prompt_templates"]) == {"av", "ar"}
    assert NLAMeta.load(pair[1]).to_dict()["critic"] == {"extraction_layer_index": 1}


# The Qwen2.5-7B AR sidecar exactly as the release's docs/inference.md shows it (its comments dropped).
RELEASE_DOCS_AR_SIDECAR = """
kind: nla_model
role: ar
d_model: 3584
extraction:
  mse_scale: 59.87
ar:
  num_hidden_layers: 20
tokens:
  critic_suffix_ids: [1318, 29, 366, 1708, 29]
prompt_templates:
  ar: "Summary of the following text: <text>{explanation}</text> <summary>"
"""


@pytest.mark.parametrize("blocks, ok", [(21, True), (28, False)])
def test_release_docs_ar_sidecar(tmp_path, blocks, ok):
    (tmp_path / "nla_meta.yaml").write_text(RELEASE_DOCS_AR_SIDECAR, encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 3584,
                                                      "num_hidden_layers": blocks}), encoding="utf-8")
    if not ok:  # an untruncated config.json (28 blocks) is not this AR's
        with pytest.raises(NLAConfigError, match="'ar.num_hidden_layers' says K = 20, so the AR keeps 21 blocks, but "
                                                 "config.json has 28"):
            NLAMeta.load(tmp_path)
        return
    meta = NLAMeta.load(tmp_path)
    assert (meta.role, meta.d_model, meta.layer, meta.mse_scale, meta.schema_version) == ("ar", 3584, 20, 59.87, 2)
    assert meta.critic_suffix_ids == [1318, 29, 366, 1708, 29] and meta.tokens is None
    assert meta.ar_template == "Summary of the following text: <text>{explanation}</text> <summary>"
    assert meta.to_dict()["ar"] == {"num_hidden_layers": 20} and "critic" not in meta.to_dict()


@pytest.mark.parametrize("raw, want", [("150", 150.0), (150, 150.0), ("sqrt_d_model", math.sqrt(32))])
def test_scales_as_the_release_resolves_them(pair, tmp_path, raw, want):
    data = _sidecar(pair[0])
    data["extraction"]["injection_scale"] = raw
    _write(tmp_path, data)
    assert NLAMeta.load(tmp_path).injection_scale == pytest.approx(want)


def test_raw_injection_scale_is_refused_for_an_av(pair, tmp_path):
    data = _sidecar(pair[0])
    data["extraction"]["injection_scale"] = "raw"  # the release's opt-out: its NLAClient refuses it too
    _write(tmp_path, data)
    with pytest.raises(NLAConfigError, match="'extraction.injection_scale' is missing or null"):
        NLAMeta.load(tmp_path)
