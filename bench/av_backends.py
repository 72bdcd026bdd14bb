"""AV backends: explanations/s of HF transformers vs vLLM (CPU build) on the same injected prompts, greedy.

    .venv-vllm/bin/python bench/av_backends.py          # needs the vLLM environment (`python3 dev.py test` builds it)

Toy kit AV (64 vectors x 64 new tokens) and a SmolLM2-135M init AV (16 vectors x 32 new tokens, random vectors: an
init AV always runs to the cap, so every row decodes the same number of tokens). vLLM is timed with prefix caching
on and off. Each figure is the best of 3 timed runs after one warm-up run; engine start-up is reported apart. Prints a
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


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def case(name: str, av: Path, vectors, max_new_tokens: int) -> dict:
    import gc

    from nla import NLAClient
    from nla.av import SamplingParams
    from nla.av_vllm import VLLMSettings

    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    hf = NLAClient(av, batch_size=len(vectors))
    embeds = hf.prompt_embeds(vectors)
    out = {"case": name, "vectors": len(vectors), "max_new_tokens": max_new_tokens, "prompt_tokens": len(embeds[0])}
    expected = hf.backend.generate(embeds, params)
    out["hf_s"] = timed(lambda: hf.backend.generate(embeds, params))
    del hf
    gc.collect()
    for caching in (True, False):
        t0 = time.perf_counter()
        vl = NLAClient(av, backend="vllm", vllm=VLLMSettings(enable_prefix_caching=caching))
        start = time.perf_counter() - t0
        assert vl.backend.generate(embeds, params) == expected, "vLLM greedy differs from HF"
        key = "vllm_cache_on" if caching else "vllm_cache_off"
        out[f"{key}_s"] = timed(lambda: vl.backend.generate(embeds, params))
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
    from nla.extract import ExtractConfig, Extractor
    from nla.toy.build import ensure_toy_kit
    from nla.toy.corpus import generate_corpus

    kit = ensure_toy_kit()
    docs = generate_corpus(20, 31)
    ext = Extractor.from_pretrained(kit / "base", ExtractConfig(layer=1, positions_per_doc=4, min_position=8))
    toy_vectors = ext([d.text for d in docs])["vector"][:64]
    smol = ROOT / "bench" / ".smol-nla"
    if not (smol / "av" / "nla_meta.yaml").is_file():
        init_pair(smollm2_folder(), 10, smol)
    smol_vectors = np.random.default_rng(0).standard_normal((16, 576)).astype(np.float32)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "cases": [case("toy kit AV", kit / "av", toy_vectors, 64),
                         case("SmolLM2-135M init AV", smol / "av", smol_vectors, 32)]}
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
