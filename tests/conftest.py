"""Shared fixtures: a locally trained tokenizer, tiny models of three families, an init pair, the toy kit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

SHORT_AV = "Here is the vector:\n\n<concept>{injection_char}</concept>\n\nPlease provide an explanation."


def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadfile` (dev.py test): whole files to each worker, as xdist does, except that the files whose
    tests take the session's `server` all go to the same worker: one server for them, not one a worker."""
    if config.getvalue("dist") != "loadfile":
        return None
    import re

    from xdist.scheduler import LoadScopeScheduling

    uses_server = re.compile(r"def test_\w+\([^)]*\bserver\b")
    server_files = {str(p.relative_to(config.rootpath)) for p in Path(__file__).parent.rglob("test_*.py")
                    if uses_server.search(p.read_text(encoding="utf-8"))}

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "the server's files" if path in server_files else path

    return FileScheduling(config, log)


@pytest.fixture(scope="session")
def tokenizer():
    from nla.toy.corpus import generate_corpus, teacher_explanation, vocabulary_texts
    from nla.toy.tokenizer import train_tokenizer

    docs = generate_corpus(300, 7)
    texts = [d.text for d in docs] + vocabulary_texts() + [teacher_explanation(d, d.text) for d in docs[:50]]
    return train_tokenizer(texts + [SHORT_AV.format(injection_char=""), "Summary of the following text"] * 50,
                           vocab_size=600)


def tiny_config(family: str, vocab: int, *, layers: int = 3, hidden: int = 32):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0,
                  eos_token_id=1, pad_token_id=2)
    if family == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True)
    if family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=8, sliding_window=64)
    raise ValueError(family)


@pytest.fixture(scope="session")
def make_base(tokenizer, tmp_path_factory):
    """family -> folder of a tiny random base of that family with the toy tokenizer."""
    from transformers import AutoModelForCausalLM

    from nla.toy.tokenizer import vocab_size_of

    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size_of(tokenizer)))
            folder = tmp_path_factory.mktemp(f"base-{family}")
            model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            made[family] = folder
        return made[family]

    return make


@pytest.fixture(scope="session")
def pair(make_base, tmp_path_factory):
    """(av_dir, ar_dir) of an init pair made by `nla init`'s code from the tiny Llama base, layer K = 1."""
    from nla.checkpoint import init_pair

    return init_pair(make_base("llama"), 1, tmp_path_factory.mktemp("pair"), av_template=SHORT_AV)


@pytest.fixture(scope="session")
def toy_kit() -> Path:
    from nla.toy.kit import ensure_toy_kit

    return ensure_toy_kit()


@pytest.fixture(scope="session")
def server(toy_kit, tmp_path_factory):
    """One real `nla serve` (toy kit, a labeled lake, a bearer token) for every HTTP test of the session."""
    from tests.serve.conftest import start_server

    yield from start_server(toy_kit, tmp_path_factory)


S3_BUCKET = "nla-lake"


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server (moto_server, its own process on a free loopback port) with bucket S3_BUCKET, and
    the AWS_* environment deltalake and Arrow read (AWS_ENDPOINT_URL, AWS_REGION, keys, AWS_ALLOW_HTTP)."""
    from tests.s3server import running

    with running() as server, pytest.MonkeyPatch.context() as env:
        server.create_bucket(S3_BUCKET)
        for k, v in server.env().items():
            env.setenv(k, v)
        yield server


