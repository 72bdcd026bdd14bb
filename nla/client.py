"""The users' API, named as in the release's inference module: `NLAClient` (AV) and `NLACritic` (AR).

Both load a checkpoint folder in the release layout (HF files + nla_meta.yaml [+ value_head.safetensors]) and
validate the sidecar against the folder's own tokenizer before the first call. Neither knows about Ray or tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch

from nla import hf
from nla.ar import ARModel
from nla.av import AVPrompter, Generation, HFBackend, SamplingParams, decode_generations
from nla.av_stream import Partial, stream_generations
from nla.checks import check_meta, check_role
from nla.errors import NLAConfigError, NLAInputError
from nla.injection import as_vectors
from nla.meta import NLAMeta
from nla.metrics import cosine, mse_nrm

if TYPE_CHECKING:
    from nla.vllm_settings import VLLMSettings

AVEngine = Literal["hf", "fast", "vllm"]  # how NLAClient generates: transformers, nla/fast/decode.py, or vLLM
AV_ENGINES: tuple[str, ...] = get_args(AVEngine)


def eos_ids(folder: Path, tokenizer: Any) -> set[int]:
    """Ids that end an explanation: generation_config.json's eos ids and the tokenizer's eos."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(str(folder)).eos_token_id
        ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except OSError:
        pass
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class NLAClient:
    """Explain activation vectors with an AV checkpoint.

    >>> client = NLAClient("toy/av")
    >>> client.generate(vector, temperature=0)   # greedy explanation text
    """

    def __init__(self, checkpoint_dir: str | Path, *, backend: AVEngine = "hf", device: str = "cpu",
                 dtype: torch.dtype = torch.float32, injection_scale_override: float | None = None,
                 batch_size: int = 32, vllm: VLLMSettings | None = None) -> None:
        """backend 'hf' runs transformers' generate; 'fast' the same weights through nla/fast/decode.py (batches
        padded to a power of two up to batch_size; for GPUs); 'vllm' a vLLM engine (settings `vllm`), keeping only
        the embedding table here."""
        self.checkpoint_dir = hf.check_folder(checkpoint_dir)
        meta = NLAMeta.load(self.checkpoint_dir)  # fail on a missing/malformed sidecar before loading weights
        if backend not in AV_ENGINES:
            raise NLAInputError(f"backend {backend!r}: choose one of {', '.join(map(repr, AV_ENGINES))} ('hf': "
                                "transformers, 'fast': nla's decode loop for GPUs, 'vllm': a vLLM engine).")
        self.tokenizer = hf.load_tokenizer(self.checkpoint_dir)
        if backend != "vllm":
            self.model = hf.load_causal_lm(self.checkpoint_dir, dtype=dtype, device=device)
            config, embedding = self.model.config, self.model.get_input_embeddings()
        else:
            from nla.embeddings import load_input_embeddings

            self.model = None
            config, embedding = hf.load_config(self.checkpoint_dir), load_input_embeddings(self.checkpoint_dir)
        self.meta = check_meta(meta, "av", self.tokenizer, config)
        self.prompter = AVPrompter(embedding, self.tokenizer, self.meta, injection_scale=injection_scale_override)
        eos = eos_ids(self.checkpoint_dir, self.tokenizer)
        if backend == "hf":
            self.backend: Any = HFBackend(self.model, self.tokenizer, eos)
        elif backend == "fast":
            from nla.fast.decode import FastBackend, PaddedBackend

            self.backend = PaddedBackend(FastBackend(self.model, self.tokenizer, eos), batch_size)
        else:
            from nla.av_vllm import VLLMBackend

            self.backend = VLLMBackend(self.checkpoint_dir, vllm, eos_ids=eos)
        self.batch_size = batch_size

    def prompt_embeds(self, activations: Any, *, prompt: str | None = None) -> list[torch.Tensor]:
        """The exact (T, d) embeddings the engine receives, one per vector."""
        return self.prompter.prompt_embeds(activations, prompt=prompt)

    def explain(self, activations: Any, *, prompt: str | None = None, keys: Sequence[int | str] | None = None,
                params: SamplingParams | None = None, **sampling: Any) -> list[Generation]:
        """Batched generation with a status per sample (ok | no_tags | truncated); nothing is dropped. Sampling is
        `params`, or SamplingParams' fields as keywords (temperature=0, max_new_tokens=64, ...).

        keys: one per vector, naming its random stream where the backend samples per row (the fast path); give the
        k samples of one vector consecutively (the vector repeated) and the fast path prefills it once."""
        if params is not None and sampling:
            raise TypeError(f"explain: give params or sampling keywords ({sorted(sampling)}), not both")
        params = params or SamplingParams.from_kwargs(**sampling)
        vectors = as_vectors(activations, self.meta.d_model)
        if keys is not None and len(keys) != vectors.shape[0]:
            raise NLAInputError(f"keys: {len(keys)} for {vectors.shape[0]} vectors. Fix: one key per vector.")
        gens: list[Generation] = []
        for start in range(0, vectors.shape[0], self.batch_size):
            embeds = self.prompt_embeds(vectors[start:start + self.batch_size], prompt=prompt)
            row_keys = {} if keys is None else {"keys": keys[start:start + self.batch_size]}
            gens.extend(decode_generations(self.tokenizer, self.backend.generate(embeds, params, **row_keys)))
        return gens

    def explain_stream(self, activations: Any, *, prompt: str | None = None, **sampling: Any
                       ) -> Iterator[Partial | list[Generation]]:
        """`explain`, streamed (HF backend): Partial updates (row index -> raw text so far) while tokens are decoded,
        then the list of Generations, the same as `explain` gives for the same seed. Closing it early stops the
        generation."""
        if not isinstance(self.backend, HFBackend):
            raise NLAConfigError("explain_stream needs the 'hf' backend: the vLLM backend does not stream here. Fix: "
                                 "use explain(), or load the AV with backend='hf'.")
        params = SamplingParams.from_kwargs(**sampling)
        vectors = as_vectors(activations, self.meta.d_model)
        gens: list[Generation] = []
        for start in range(0, vectors.shape[0], self.batch_size):
            embeds = self.prompt_embeds(vectors[start:start + self.batch_size], prompt=prompt)
            for event in stream_generations(self.backend, embeds, params):
                if isinstance(event, Partial):
                    yield Partial({start + i: t for i, t in event.texts.items()})
                else:
                    gens.extend(event)
        yield gens

    def generate(self, activation: Any, *, prompt: str | None = None, extract_explanation: bool = True,
                 **sampling: Any) -> str:
        """One vector -> its explanation (or the raw output when tags are missing or extract_explanation=False)."""
        v = as_vectors(activation, self.meta.d_model)
        if v.shape[0] != 1:
            raise NLAInputError(f"activation: got {v.shape[0]} vectors; generate() takes one. Fix: generate_batch().")
        return self.generate_batch(v, prompt=prompt, extract_explanation=extract_explanation, **sampling)[0]

    def generate_batch(self, activations: Any, *, prompt: str | None = None, extract_explanation: bool = True,
                       **sampling: Any) -> list[str]:
        gens = self.explain(activations, prompt=prompt, **sampling)
        return [g.explanation if extract_explanation and g.status == "ok" else g.raw_output for g in gens]


class NLACritic:
    """Reconstruct vectors from explanations with an AR checkpoint, and score round trips.

    >>> critic = NLACritic("toy/ar")
    >>> mse, cos = critic.score(explanation, vector)   # mse = 2(1 - cos)
    """

    def __init__(self, checkpoint_dir: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 64) -> None:
        self.checkpoint_dir = hf.check_folder(checkpoint_dir)
        meta = NLAMeta.load(self.checkpoint_dir)
        check_role(meta, "ar")  # an AV folder is refused before anything loads
        self.tokenizer = hf.load_tokenizer(self.checkpoint_dir)
        self.model = ARModel.from_pretrained(self.checkpoint_dir, dtype=dtype, device=device)
        self.meta = check_meta(meta, "ar", self.tokenizer, self.model.lm.config)
        blocks = len(self.model.backbone.layers)
        if blocks != self.meta.layer + 1:
            raise NLAConfigError(f"{self.meta.source}: says K = {self.meta.layer}, so the AR keeps {self.meta.layer + 1} "
                                 f"blocks, but its weights have {blocks}. Fix: use the sidecar shipped with this AR.")
        self.mse_scale = float(self.meta.mse_scale)
        self.device, self.batch_size = device, batch_size

    @torch.inference_mode()
    def reconstruct_batch(self, explanations: list[str]) -> torch.Tensor:
        """(N, d) raw reconstructions, float32 on the CPU."""
        if isinstance(explanations, str):
            raise NLAInputError("explanations: got one string; reconstruct_batch takes a list. Fix: reconstruct().")
        out = []
        for start in range(0, len(explanations), self.batch_size):
            enc = self.model.encode(self.tokenizer, self.meta.ar_template, explanations[start:start + self.batch_size])
            out.append(self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)).float().cpu())
        if not out:
            return torch.zeros((0, self.meta.d_model))
        return torch.cat(out)

    def reconstruct(self, explanation: str) -> torch.Tensor:
        """(d,) raw reconstruction of one explanation."""
        return self.reconstruct_batch([explanation])[0]

    def score_batch(self, explanations: list[str], originals: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(mse_nrm, cos), each (N,): both vectors at L2 norm mse_scale, so mse = 2(1 - cos)."""
        v = as_vectors(originals, self.meta.d_model, name="original")
        if v.shape[0] != len(explanations):
            raise NLAInputError(f"got {len(explanations)} explanations but {v.shape[0]} vectors. Fix: pair them 1:1.")
        r = self.reconstruct_batch(explanations)
        return mse_nrm(r, v, self.mse_scale), cosine(r, v)

    def score(self, explanation: str, original: Any) -> tuple[float, float]:
        mse, cos = self.score_batch([explanation], np.asarray(original, dtype=np.float32).reshape(1, -1))
        return float(mse[0]), float(cos[0])
