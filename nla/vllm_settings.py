"""The vLLM engine's settings (models.av_backend = vllm): a plain dataclass that configs, the CLI and the job's driver
can hold without importing torch or vLLM. nla/av_vllm.py builds the engine from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VLLMSettings:
    dtype: str = "float32"  # engine weights dtype; float32 on CPU keeps greedy tokens equal to the HF backend's
    enforce_eager: bool = True  # no CUDA graphs / compilation: starts in ~15 s; set False on GPUs for speed
    enable_prefix_caching: bool = True  # safe: vLLM 0.32 hashes each block's embedding bytes (docs/labeling.md, the AV on vLLM)
    gpu_memory_utilization: float = 0.85  # GPU share for weights + KV cache
    tensor_parallel_size: int = 1  # GPUs per engine (70B on 80 GB GPUs needs 2+)
    max_model_len: int = 0  # 0 = the model's own limit; prompts (~150 tokens) + explanations (<= 200) are short
    cpu_kv_cache_gb: int = 1  # VLLM_CPU_KVCACHE_SPACE on CPU builds (vLLM otherwise takes most of the memory)
    cpu_reserved_cores: int = 0  # VLLM_CPU_NUM_OF_RESERVED_CPU: vLLM keeps one core for its scheduler by default
    seed: int = 0
