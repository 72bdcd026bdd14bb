"""Sidecar: round trip, legacy names, dataset sidecars, and every validation failure with a clear message."""

from __future__ import annotations

import math

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


def test_legacy_actor_critic_names_load(pair, tmp_path, tokenizer):
    data = _sidecar(pair[1])
    data["role"] = "critic"
    data["prompt_templates"] = {"actor": data["prompt_templates"]["av"], "critic": data["prompt_templates"]["ar"]}
    del data["extraction_layer_index"]
    data["critic"] = {"num_hidden_layers": 2}  # older AR sidecars: blocks kept = K + 1
    _write(tmp_path, data)
    meta = NLAMeta.load(tmp_path)
    assert meta.role == "ar" and meta.layer == 1 and meta.ar_template.startswith("Summary")
    meta.validate(tokenizer)
    written = meta.to_dict()
    assert written["role"] == "ar" and set(written["prompt_templates"]) == {"av", "ar"}


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
