"""AV backends: explanations/s of HF transformers vs vLLM (CPU build) on the same injected prompts, greedy.

    .venv-vllm/bin/python bench/av_backends.py          # needs the vLLM environment (`python3 dev.py test` builds it)

Toy kit AV (64 vectors x 64 new tokens) and a SmolLM2-135M init AV (16 vectors x 32 new tokens, random vectors: an
init AV always runs to the cap, so every row decodes the same number of tokens). vLLM is timed with prefix caching
on and off. Each figure is the best of 3 timed runs after one warm-up run, each run on new vectors (so a prefix cache
never replays an identical prompt); engine start-up is reported apart. Prints a
table with the ratio, writes bench/results/av_backends.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, batches: list) -> float:
    """Best time over batches[1:] after a warm-up on batches[0]; every batch holds other vectors, so a prefix cache
    never sees the same injected prompt twice."""
    fn(batches[0])
    best = float("inf")
    for b in batches[1:]:
        t0 = time.perf_counter()
        fn(b)
        best = min(best, time.perf_counter() - t0)
    return best


def case(name: str, av: Path, vector_sets: list, max_new_tokens: int) -> dict:
    import gc

    from nla import NLAClient
    from nla.av import SamplingParams
    from nla.vllm_settings import VLLMSettings

    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    vectors = vector_sets[0]
    hf = NLAClient(av, batch_size=len(vectors))
    batches = [hf.prompt_embeds(v) for v in vector_sets]
    embeds = batches[0]
    out = {"case": name, "vectors": len(vectors), "max_new_tokens": max_new_tokens, "prompt_tokens": len(embeds[0])}
    expected = hf.backend.generate(embeds, params)
    out["hf_s"] = timed(lambda b: hf.backend.generate(b, params), batches)
    del hf
    gc.collect()
    for caching in (True, False):
        t0 = time.perf_counter()
        vl = NLAClient(av, backend="vllm", vllm=VLLMSettings(enable_prefix_caching=caching))
        start = time.perf_counter() - t0
        key = "vllm_cache_on" if caching else "vllm_cache_off"
        out[f"{key}_s"] = timed(lambda b: vl.backend.generate(b, params), batches)
        assert vl.backend.generate(embeds, params) == expected, "vLLM greedy differs from HF"
        out[f"{key}_engine_start_s"] = start
        del vl
        gc.collect()
    out["hf_expl_per_s"] = len(vectors) / out["hf_s"]
    for key in ("vllm_cache_on", "vllm_cache_off"):
        out[f"{key}_expl_per_s"] = len(vectors) / out[f"{key}_s"]
    out["ratio_vllm_over_hf"] = out["vllm_cache_on_expl_per_s"] / out["hf_expl_per_s"]
    return out


def main() -> None:
    import numpy as np

    from nla.bases import smollm2_folder
    from nla.checkpoint import init_pair
    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.toy.kit import ensure_toy_kit
    from nla.toy.corpus import generate_corpus

    kit = ensure_toy_kit()
    docs = generate_corpus(80, 31)
    ext = Extractor.from_pretrained(kit / "base", ExtractConfig(layer=1, positions_per_doc=4, min_position=8))
    toy = ext([d.text for d in docs])["vector"]
    toy_sets = [toy[i * 64:(i + 1) * 64] for i in range(4)]
    smol = ROOT / "bench" / ".smol-nla"
    if not (smol / "av" / "nla_meta.yaml").is_file():
        init_pair(smollm2_folder(), 10, smol)
    smol_sets = list(np.random.default_rng(0).standard_normal((4, 16, 576)).astype(np.float32))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "cases": [case("toy kit AV", kit / "av", toy_sets, 64),
                         case("SmolLM2-135M init AV", smol / "av", smol_sets, 32)]}
    print(f"\nAV backends, greedy, same injected prompts ({results['machine']})")
    print(f"{'case':<22} {'vectors':>7} {'new tok':>7} {'HF expl/s':>10} {'vLLM expl/s':>12} {'no-cache':>9} "
          f"{'vLLM/HF':>8} {'engine start s':>15}")
    for c in results["cases"]:
        print(f"{c['case']:<22} {c['vectors']:>7} {c['max_new_tokens']:>7} {c['hf_expl_per_s']:>10.1f} "
              f"{c['vllm_cache_on_expl_per_s']:>12.1f} {c['vllm_cache_off_expl_per_s']:>9.1f} "
              f"{c['ratio_vllm_over_hf']:>8.1f} {c['vllm_cache_on_engine_start_s']:>15.1f}")
    out = ROOT / "bench" / "results" / "av_backends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
