"""Typed YAML configs: defaults, overrides, unknown keys and wrong types rejected with the key named."""

from __future__ import annotations

import pytest

from nla.config import load_config
from nla.errors import NLAConfigError
from nla.labeling.config import LabelConfig


def test_toy_config_and_overrides():
    cfg = load_config(LabelConfig, "jobs/configs/toy.yaml", ["input=/data/x", "lake=/tmp/l", "sampling.samples=4",
                                                              "explainer.num_gpus=0.5"])
    assert cfg.input == "/data/x" and cfg.lake == "/tmp/l" and cfg.sampling.samples == 4
    assert cfg.explainer.num_gpus == 0.5 and cfg.extract.min_position == 8 and cfg.models.av == "toy"


def test_an_override_that_is_not_yaml_is_the_text_as_written():
    """`ray_address=[::1]:6379` is no YAML (a flow sequence that never closes): the value is the string typed, not a
    parser traceback; a key of another type then refuses it by name."""
    cfg = load_config(LabelConfig, "jobs/configs/toy.yaml", ["ray_address=[::1]:6379", "input=@corpus"])
    assert cfg.ray_address == "[::1]:6379" and cfg.input == "@corpus"
    with pytest.raises(NLAConfigError, match=r"key 'sampling.temperature' is '\[1'; expected float"):
        load_config(LabelConfig, "jobs/configs/toy.yaml", ["sampling.temperature=[1"])


@pytest.mark.parametrize("overrides, match", [
    (["sampling.sample=4"], "Did you mean 'sampling.samples'"),
    (["inptu=x"], "Did you mean 'input'"),
    (["sampling.samples=many"], "expected int"),
    (["models.dtype=float8"], "choose one of"),
    (["models=cpu"], "is a section"),
    (["novalue"], "key=value"),
])
def test_bad_configs(overrides, match):
    with pytest.raises(NLAConfigError, match=match):
        load_config(LabelConfig, "jobs/configs/toy.yaml", overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(NLAConfigError, match="no such file"):
        load_config(LabelConfig, tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("models: [unclosed")
    with pytest.raises(NLAConfigError, match="YAML"):
        load_config(LabelConfig, tmp_path / "bad.yaml")


@pytest.mark.parametrize("name", ["toy", "smollm2", "qwen7b", "qwen7b-1gpu", "qwen7b-multigpu", "gemma3-12b", "gemma3-27b",
                                  "llama70b"])
def test_example_configs_load(name):
    cfg = load_config(LabelConfig, f"jobs/configs/{name}.yaml")
    assert cfg.models.av and cfg.extractor.concurrency >= 1
    if cfg.models.device == "cuda":
        if cfg.models.av_backend == "vllm":
            assert cfg.explainer.num_gpus >= cfg.vllm.tensor_parallel_size
        else:  # transformers on a GPU only with the fast path
            assert cfg.models.fast and cfg.models.dtype == "bfloat16"
        if cfg.fuse:  # one replica of all three models per actor: the explainer's resources
            assert cfg.explainer.num_gpus == 1, cfg.explainer
        else:
            gpus = [r.num_gpus * r.concurrency for r in (cfg.extractor, cfg.explainer, cfg.scorer)]
            assert all(g > 0 for g in gpus), gpus
