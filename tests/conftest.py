"""Shared fixtures: a locally trained tokenizer, tiny models of three families, an init pair, the toy kit."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread in each of dev.py's two pytest workers (OMP_NUM_THREADS=1 there): with two, a worker's small ops
# wait at OpenMP barriers whenever the other worker holds a core (tests/nla's model tests: 66 -> 43 CPU-seconds).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("OMP_NUM_THREADS") == "1" else 2)

SHORT_AV = "Here is the vector:\n\n<concept>{injection_char}</concept>\n\nPlease provide an explanation."


@functools.cache  # asked after every test while the server runs: the files are read once
def server_files(root: Path) -> frozenset[str]:
    """The test files (relative to root) with a test that takes the session's `server`."""
    import re

    uses_server = re.compile(r"def test_\w+\([^)]*\bserver\b")
    return frozenset(str(p.relative_to(root)) for p in Path(__file__).parent.rglob("test_*.py")
                     if uses_server.search(p.read_text(encoding="utf-8")))


# The heaviest test files, by the CPU-seconds their tests took, one file after another in one process (a profile of
# the whole suite, 2026-12-07, less what was cut since; rounded). Collected first (below), they start first:
# xdist's default puts the files with the most tests first, which left the fault, store and training files, few tests
# each but minutes of work, to the end, one worker busy with them while the other had nothing left (220 idle
# CPU-seconds in that run); files of half a minute left late (the demo, the SAE walkthrough) did the same on a
# smaller scale.
HEAVY_FIRST = {"tests/reliability/test_faults.py": 220, "tests/jobs/test_train.py": 200,
               "tests/reliability/test_bad_input.py": 160,  # with the other server files: one unit (below)
               "tests/jobs/test_identity.py": 130, "tests/reliability/test_object_store.py": 130,
               "tests/jobs/test_object_store.py": 90, "tests/jobs/test_label.py": 85,
               "tests/infra/test_multinode.py": 60, "tests/reliability/test_concurrent.py": 55,
               "tests/nla/test_toy.py": 47, "tests/jobs/test_label_anything.py": 45, "tests/nla/test_cli.py": 35,
               "tests/nla/lake/test_cli_lake.py": 28, "tests/nla/test_train.py": 19}


def pytest_collection_modifyitems(config, items):
    """The files of HEAVY_FIRST first, heaviest first; the rest after them, in their own order. While the toy kit is
    not built yet (dev.py builds it beside the suite on a fresh machine), the files that do not need it come first:
    they run while it builds, and the others wait for it in their `toy_kit` fixture."""
    from nla.toy.kit import kit_dir

    file_of = lambda item: item.nodeid.split("::", 1)[0]  # noqa: E731
    needs_kit = {file_of(it) for it in items if "toy_kit" in it.fixturenames}
    building = not (kit_dir() / "report.json").is_file()
    items.sort(key=lambda it: (building and file_of(it) in needs_kit, -HEAVY_FIRST.get(file_of(it), 0)))  # stable


def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadfile` (dev.py test): whole files to each worker, as xdist does, except that the files whose
    tests take the session's `server` all go to the same worker, one after another: one server for them, not one a
    worker, stopped once they are done (pytest_runtest_teardown below)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # files in the collected order: the heaviest first (above)

    files = server_files(config.rootpath)

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "the server's files" if path in files else path

    return FileScheduling(config, log)


_server_stop: list = []  # the session server's stop, while it runs


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """Stop the session's server as soon as no test ahead in this process uses it, not at the end of the session:
    idle, its Serve controller, replicas and Ray cluster took ~100 CPU-seconds over a 20-minute suite on 2 cores.
    Under xdist the server's files come as one unit (above), so the first item from another file ends them; in one
    process, the last item of a server file in the run's order does."""
    if not _server_stop:
        return
    files = server_files(item.config.rootpath)
    in_files = lambda it: it is not None and it.nodeid.split("::", 1)[0] in files  # noqa: E731
    if os.environ.get("PYTEST_XDIST_WORKER"):
        done = not in_files(nextitem)
    else:
        done = not any(in_files(it) for it in item.session.items[item.session.items.index(item) + 1:])
    if done:
        _server_stop.pop()()


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

    running = start_server(toy_kit, tmp_path_factory)
    _server_stop.append(running.close)  # SIGINT to the server (the generator's finally)
    yield next(running)
    if _server_stop:
        _server_stop.pop()()


@pytest.fixture(scope="session")
def ray_cluster():
    """The Ray cluster the labeling and training jobs of tests/jobs and tests/reliability join (`RAY_ADDRESS`), as
    jobs submitted to a real cluster do: one a pytest worker, started when a test first needs it, not a local Ray
    per job (each cost ~15 CPU-seconds of start-up on 2 cores). 4 logical CPUs: a label job asks for 1.25, a
    2-worker training run for 1 plus its controller, two toy jobs at once (test_concurrent.py) fit."""
    from tests.raycluster import running

    with running([(4, {})]) as cluster:
        yield cluster


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


@pytest.fixture
def bucket(s3, request) -> str:
    """A new empty bucket of the session's S3 server for this test alone (S3Server.new_bucket says why)."""
    return s3.new_bucket(request.node.name)
