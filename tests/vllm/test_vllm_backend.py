"""The AV on vLLM (CPU build): greedy parity with the HF backend token for token, seeded sampling, prefix caching,
and the labeling job's AV stage on vLLM in a Ray Data actor pool. Runs in .venv-vllm (`python3 dev.py test` builds
it); skipped where vLLM is not installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.groups import need_module

vllm = need_module("vllm", "vLLM runs in .venv-vllm: `python3 dev.py test` builds it and runs these there")

from nla import NLAClient  # noqa: E402
from nla.av import SamplingParams  # noqa: E402
from nla.vllm_settings import VLLMSettings  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The engines these tests build in this process run their core in it (no EngineCore and worker processes, which
# import vLLM again: the parity tests took 84 CPU-seconds that way, 39 this way); the tokens do not depend on it. The
# labeling job below keeps vLLM's default layout, the engine core in a process of its own, as on GPUs.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="module")
def toy_pair(toy_kit):
    av = toy_kit / "av"
    return NLAClient(av), NLAClient(av, backend="vllm", vllm=VLLMSettings())


@pytest.fixture(scope="module")
def toy_vectors(toy_kit):
    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.toy.corpus import generate_corpus

    docs = generate_corpus(12, 4242)
    ext = Extractor.from_pretrained(toy_kit / "base", ExtractConfig(layer=1, positions_per_doc=3, min_position=8))
    real = ext([d.text for d in docs])["vector"][:32]
    rand = np.random.default_rng(0).standard_normal((8, real.shape[1])).astype(np.float32)
    return np.concatenate([real, rand])


# first: it needs no toy kit, so on a fresh machine it runs while the kit builds (dev.py)
def test_greedy_parity_smollm2(tmp_path_factory):
    from nla.bases import smollm2_folder
    from nla.checkpoint import init_pair

    av, _ = init_pair(smollm2_folder(), 10, tmp_path_factory.mktemp("smol"))
    hf = NLAClient(av)
    vectors = np.random.default_rng(1).standard_normal((6, hf.meta.d_model)).astype(np.float32)
    embeds = hf.prompt_embeds(vectors)
    params = SamplingParams(temperature=0, max_new_tokens=24)
    expected = hf.backend.generate(embeds, params)
    del hf
    vl = NLAClient(av, backend="vllm", vllm=VLLMSettings())
    assert vl.backend.generate(embeds, params) == expected


def test_greedy_parity_toy(toy_pair, toy_vectors):
    hf, vl = toy_pair
    embeds = hf.prompt_embeds(toy_vectors)
    for a, b in zip(embeds, vl.prompt_embeds(toy_vectors)):  # the engine gets the very same embeddings
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    params = SamplingParams(temperature=0, max_new_tokens=64)
    assert vl.backend.generate(embeds, params) == hf.backend.generate(embeds, params)
    assert vl.explain(toy_vectors, temperature=0, max_new_tokens=64) == \
        hf.explain(toy_vectors, temperature=0, max_new_tokens=64)
    short = SamplingParams(temperature=0, max_new_tokens=12)  # truncated samples agree too
    assert vl.backend.generate(embeds[:8], short) == hf.backend.generate(embeds[:8], short)


def test_seeded_sampling_is_reproducible(toy_pair, toy_vectors):
    _, vl = toy_pair
    a = vl.generate_batch(toy_vectors[:8], temperature=1.0, max_new_tokens=32, seed=11)
    b = vl.generate_batch(toy_vectors[:8], temperature=1.0, max_new_tokens=32, seed=11)
    c = vl.generate_batch(toy_vectors[:8], temperature=1.0, max_new_tokens=32, seed=12)
    assert a == b and a != c


def test_prefix_caching_never_aliases_vectors(toy_pair, toy_vectors):
    hf, vl = toy_pair
    preamble = " ".join(["the storm in oslo closed the roads for days ."] * 14)  # > one 128-token cache block
    prompt = preamble + " <concept><INJECT></concept>"
    params = SamplingParams(temperature=0, max_new_tokens=24)
    assert len(hf.prompter.input_ids(prompt)) > 128  # the marker sits past the first cache block
    for v in toy_vectors[:4]:  # same prefix, different vector at the marker: cached blocks must not be reused
        e = vl.prompt_embeds(v, prompt=prompt)
        assert vl.backend.generate(e, params) == hf.backend.generate(hf.prompt_embeds(v, prompt=prompt), params)


def test_label_job_with_vllm_av(toy_kit, toy_pair, tmp_path):
    """The job's AV stage on vLLM (a Ray Data actor pool) writes what the HF backend explains for the same stored
    activations, explanation and status for every row."""
    import subprocess
    import sys

    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake
    from nla.toy.shards import write_corpus

    write_corpus(tmp_path / "corpus", docs=12, shards=2, seed=5)
    lake = tmp_path / "lake"
    p = subprocess.run([sys.executable, "-m", "nla.jobs.label", "--config", "jobs/configs/toy.yaml",
                        f"input={tmp_path / 'corpus'}", f"lake={lake}", "models.av_backend=vllm",
                        "explainer.concurrency=1"],  # one engine: two would share the same 2 cores
                       capture_output=True, text=True, timeout=900,
                       env={k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sql = ("SELECT e.act_id, e.explanation, e.status, a.vector FROM explanations e JOIN activations a "
           "USING (act_id) ORDER BY e.act_id")
    with LakeQuery(Lake(lake)) as q:
        rows = q.run(sql, limit=None).to_pylist()
    assert len(rows) == 72  # 12 documents x 6 positions
    hf, _ = toy_pair
    gens = hf.explain(np.array([r["vector"] for r in rows], np.float32), temperature=0, max_new_tokens=64)
    assert [(r["explanation"], r["status"]) for r in rows] == [(g.explanation, g.status) for g in gens]
