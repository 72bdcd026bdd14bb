"""Checkpoint folders in the release layout load through NLAClient/NLACritic; broken folders fail clearly."""

from __future__ import annotations

import shutil

import pytest
import yaml

from nla import NLAClient, NLACritic
from nla.errors import NLACheckpointError, NLAConfigError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_sidecar(folder, fn):
    f = folder / "nla_meta.yaml"
    data = yaml.safe_load(f.read_text(encoding="utf-8"))
    fn(data)
    f.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_release_layout(pair):
    av, ar = pair
    assert {"config.json", "model.safetensors", "tokenizer.json", "nla_meta.yaml"} <= {p.name for p in av.iterdir()}
    assert {"config.json", "model.safetensors", "value_head.safetensors", "nla_meta.yaml"} <= \
        {p.name for p in ar.iterdir()}
    import json

    assert json.loads((ar / "config.json").read_text())["num_hidden_layers"] == 2  # K + 1


def test_legacy_folders_load_and_score(pair, tmp_path):
    av = _copy(pair[0], tmp_path / "actor")
    ar = _copy(pair[1], tmp_path / "critic")

    def legacy(data):
        data["role"] = {"av": "actor", "ar": "critic"}[data["role"]]
        pt = data.pop("prompt_templates")
        data["prompt_templates"] = {"actor": pt["av"], "critic": pt["ar"]}

    _edit_sidecar(av, legacy)
    _edit_sidecar(ar, legacy)
    client, critic = NLAClient(av), NLACritic(ar)
    v = client.prompt_embeds  # the API names of the release
    text = client.generate([1.0] * client.meta.d_model, temperature=0, max_new_tokens=5)
    mse, cos = critic.score(text.strip() or "x", [1.0] * critic.meta.d_model)
    assert callable(v) and mse == pytest.approx(2 * (1 - cos), abs=1e-5) and cos < 1  # the score's definition


def test_role_mismatch(pair):
    with pytest.raises(NLAConfigError, match="role is 'ar'"):
        NLAClient(pair[1])
    with pytest.raises(NLAConfigError, match="role is 'av' but this loader needs 'ar'. Fix: point NLACritic at the AR"):
        NLACritic(pair[0])


def test_missing_sidecar_and_value_head(pair, tmp_path):
    ar = _copy(pair[1], tmp_path / "ar")
    (ar / "value_head.safetensors").unlink()
    with pytest.raises(NLACheckpointError, match="value_head.safetensors"):
        NLACritic(ar)
    av = _copy(pair[0], tmp_path / "av")
    (av / "nla_meta.yaml").unlink()
    with pytest.raises(NLAConfigError, match="no sidecar"):
        NLAClient(av)
    with pytest.raises(NLACheckpointError, match="no such checkpoint folder"):
        NLAClient(tmp_path / "nowhere")


def test_truncated_safetensors(pair, tmp_path):
    av = _copy(pair[0], tmp_path / "av")
    w = av / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(NLACheckpointError, match="truncated"):
        NLAClient(av)


def test_d_model_mismatch(pair, tmp_path):
    av = _copy(pair[0], tmp_path / "av")
    _edit_sidecar(av, lambda d: d.update(d_model=64))
    with pytest.raises(NLAConfigError, match="hidden size is 32"):
        NLAClient(av)


def test_layer_mismatch(pair, tmp_path):
    ar = _copy(pair[1], tmp_path / "ar")
    _edit_sidecar(ar, lambda d: (d.update(extraction_layer_index=0), d["critic"].update(extraction_layer_index=0)))
    with pytest.raises(NLAConfigError, match=r"'extraction_layer_index' says K = 0, so the AR keeps 1 blocks, but "
                                             r"config.json has 2\. Fix"):
        NLACritic(ar)


def test_tokenizer_drift(pair, tmp_path):
    av = _copy(pair[0], tmp_path / "av")
    _edit_sidecar(av, lambda d: d["tokens"].update(injection_token_id=d["tokens"]["injection_token_id"] - 1))
    with pytest.raises(NLAConfigError, match="drift"):
        NLAClient(av)


def test_check_checkpoint_remembers_a_pass_and_rechecks_a_changed_folder(pair, tmp_path, monkeypatch):
    """A folder that passed is not re-checked against its tokenizer (nla.checked), until any file in it changes."""
    from nla import checked
    from nla.checks import check_checkpoint

    monkeypatch.setenv("NLA_HOME", str(tmp_path / "home"))
    av = _copy(pair[0], tmp_path / "av")
    key = checked.stamp(av, "av")
    assert not checked.passed(key)
    check_checkpoint(av, "av")
    assert checked.passed(key) and check_checkpoint(av, "av").d_model == 32
    _edit_sidecar(av, lambda d: d["tokens"].update(injection_token_id=d["tokens"]["injection_token_id"] - 1))
    assert checked.stamp(av, "av") != key
    with pytest.raises(NLAConfigError, match="drift"):
        check_checkpoint(av, "av")
    assert checked.stamp(av, "ar") != key  # the role is part of the stamp: an AV folder never passes as an AR


def test_engine_is_chosen_by_name_inside_the_client(pair):
    """backend='fast' (nla/fast/decode.py, batches padded to a power of two) explains as 'hf' does, greedy, with no
    caller swapping engines; an unknown name is refused naming the three."""
    import numpy as np

    from nla.errors import NLAInputError
    from nla.fast.decode import FastBackend, PaddedBackend

    av = pair[0]
    vectors = np.random.default_rng(3).standard_normal((3, 32)).astype(np.float32) * 4
    fast = NLAClient(av, backend="fast", batch_size=8)
    assert isinstance(fast.backend, PaddedBackend) and isinstance(fast.backend.backend, FastBackend)
    want = NLAClient(av).explain(vectors, temperature=0, max_new_tokens=12)
    assert fast.explain(vectors, temperature=0, max_new_tokens=12) == want
    with pytest.raises(NLAInputError, match=r"backend 'tpu': choose one of 'hf', 'fast', 'vllm'"):
        NLAClient(av, backend="tpu")
