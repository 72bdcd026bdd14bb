"""The plan reads the base's width from config.json without transformers, as AutoConfig would read it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nla.errors import NLACheckpointError
from nla.hfconfig import hidden_size


def write(folder, config) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    return str(folder)


def test_hidden_size_top_level_nested_and_defaults(tmp_path, make_base):
    from transformers import AutoConfig

    base = make_base("qwen2")
    assert hidden_size(str(base)) == AutoConfig.from_pretrained(base).hidden_size == 32
    # a multimodal config keeps the LM's width under text_config (Gemma-3 releases)
    gemma = write(tmp_path / "gemma", {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text",
                                                                               "hidden_size": 3840}})
    assert hidden_size(gemma) == 3840
    # no hidden_size in the file: the model type's default, through AutoConfig
    bare = write(tmp_path / "bare", {"model_type": "llama"})
    assert hidden_size(bare) == AutoConfig.from_pretrained(bare).hidden_size == 4096


def test_hidden_size_bad_config(tmp_path):
    with pytest.raises(NLACheckpointError, match="config.json: unreadable.*Fix"):
        hidden_size(write(tmp_path / "broken", "{not json"))
    with pytest.raises(NLACheckpointError, match="no config.json"):
        hidden_size(str(tmp_path))


def test_planning_imports_no_transformers(tmp_path, toy_kit):
    """A driver plans a toy run without importing transformers (3 s on 2 cores; the actors need it, the driver not),
    once the model folders' check is cached (nla.checked: the first plan here)."""
    from nla.config import load_config
    from nla.labeling.config import LabelConfig
    from nla.labeling.plan import make_plan
    from nla.toy.shards import write_corpus

    write_corpus(tmp_path / "corpus", docs=6, shards=1, seed=1)
    overrides = [f"input={tmp_path / 'corpus'}", f"lake={tmp_path / 'lake'}"]
    make_plan(load_config(LabelConfig, "jobs/configs/toy.yaml", overrides), "label")
    code = ("import sys; from nla.config import load_config; from nla.labeling.config import LabelConfig; "
            "from nla.labeling.plan import make_plan; "
            f"plan = make_plan(load_config(LabelConfig, 'jobs/configs/toy.yaml', {overrides!r}), 'label'); "
            "print(plan.d, 'transformers' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split() == ["128", "False"], p.stdout + p.stderr[-2000:]
