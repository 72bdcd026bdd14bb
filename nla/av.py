"""The AV (activation verbalizer): injected prompt embeddings -> generated explanation, parsed and statused.

`AVPrompter` turns vectors into the exact embeddings the engine receives. `HFBackend` generates from them with
transformers; any other engine (vLLM, issue 6) implements the same `AVBackend.generate`. `parse_explanation` gives
every sample a status (ok | no_tags | truncated) and never drops one. Loading checkpoints lives in client.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from nla import prompt as P
from nla.injection import as_vectors, inject
from nla.meta import NLAMeta

_EXPLANATION_RE = re.compile(rf"{re.escape(P.EXPLANATION_OPEN)}(.*?){re.escape(P.EXPLANATION_CLOSE)}", re.DOTALL)
STATUSES = ("ok", "no_tags", "truncated", "error")
MIN_TEMPERATURE = 1e-2  # below this (but above 0), logits / T overflow float32 and sampling fails


@dataclass
class SamplingParams:
    max_new_tokens: int = 200  # the release's cap for explanations (RL caps at 150)
    temperature: float = 1.0  # 0 = greedy; the release samples at 1.0 for training/eval, greedy for examples
    top_p: float = 1.0  # keep the smallest set of most likely tokens whose probability reaches top_p
    top_k: int = 0  # keep the k most likely tokens (0 = all, as the release and vLLM sample)
    seed: int | None = None  # the plain path seeds torch's RNG per call; the fast path seeds each row's own stream

    def __post_init__(self) -> None:
        from nla.errors import NLAInputError

        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= 100):
            raise NLAInputError(f"temperature {self.temperature!r}: sampling needs 0 (greedy) or a value in "
                                f"[{MIN_TEMPERATURE}, 100] (smaller ones overflow the logits). Fix: use 0 or e.g. 1.0.")
        if not 0 < self.top_p <= 1:
            raise NLAInputError(f"top_p {self.top_p!r}: must be in (0, 1]. Fix: use e.g. 1.0 or 0.9.")
        if self.top_k < 0:
            raise NLAInputError(f"top_k {self.top_k!r}: must be >= 0 (0 = no top-k cut). Fix: use 0 or e.g. 50.")
        if self.max_new_tokens < 1:
            raise NLAInputError(f"max_new_tokens {self.max_new_tokens!r}: must be >= 1. Fix: use e.g. 200.")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise NLAInputError(f"seed {self.seed!r}: must be in [0, 2**63). Fix: use a smaller non-negative seed.")

    @classmethod
    def from_kwargs(cls, **kw: Any) -> SamplingParams:
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown sampling parameter(s) {sorted(unknown)}; "
                            f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**kw)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    explanation: str | None  # text inside <explanation> tags, stripped; None when status != ok
    raw_output: str
    status: str  # ok | no_tags | truncated | error
    n_tokens: int


def parse_explanation(raw: str, *, hit_limit: bool) -> tuple[str | None, str]:
    """(explanation, status): the tagged text, else 'truncated' if generation hit its cap, else 'no_tags'."""
    m = _EXPLANATION_RE.search(raw)
    if m and m.group(1).strip():
        return m.group(1).strip(), "ok"
    return None, "truncated" if hit_limit else "no_tags"


class AVPrompter:
    """Builds the AV's input ids and injected embeddings from the sidecar and an input embedding layer: the model's
    own (`model.get_input_embeddings()`), or the table alone (nla.embeddings) when an engine holds the model."""

    def __init__(self, embedding: torch.nn.Module, tokenizer: Any, meta: NLAMeta, *,
                 injection_scale: float | None = None) -> None:
        assert meta.tokens is not None and meta.av_template is not None, "AV sidecars carry tokens and a template"
        self.embedding, self.tokenizer, self.meta = embedding, tokenizer, meta
        self.injection_scale = injection_scale or meta.injection_scale
        self.canonical_ids = P.render_chat_ids(tokenizer, P.av_content(meta.av_template, meta.tokens.injection_char))

    def input_ids(self, prompt: str | None = None) -> list[int]:
        if prompt is None:
            return self.canonical_ids
        return P.render_chat_ids(self.tokenizer, P.av_content(self.meta.av_template, self.meta.tokens.injection_char,
                                                               prompt))

    def embed(self, ids: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """(B, T) ids with one marker per row + (B, d) raw vectors -> (B, T, d) injected embeddings."""
        weight = self.embedding.weight  # Gemma's layer applies its sqrt(d) scale itself (TableEmbedding too)
        return self._inject(ids, self.embedding(ids.to(weight.device)), vectors)

    @contextlib.contextmanager
    def injecting(self, vectors: torch.Tensor) -> Iterator[None]:
        """Inside, the embedding layer's forward injects `vectors` (B, d) at the markers of the ids it looks up:
        call the model with input_ids, and the injection happens in its own forward (what FSDP needs: the sharded
        embedding is gathered only there). Same tensors as `embed`, the hook acting on the layer's output, after
        Gemma's sqrt(d) scale, so the vector is never scaled. The hook is removed on exit, error or not."""
        handle = self.embedding.register_forward_hook(lambda _m, args, out: self._inject(args[0], out, vectors))
        try:
            yield
        finally:
            handle.remove()

    def _inject(self, ids: torch.Tensor, embeds: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        t = self.meta.tokens
        return inject(ids.to(embeds.device), embeds, vectors, token_id=t.injection_token_id,
                      left_id=t.injection_left_neighbor_id, right_id=t.injection_right_neighbor_id,
                      injection_scale=self.injection_scale)

    @torch.inference_mode()
    def prompt_embeds(self, activations: Any, *, prompt: str | None = None) -> list[torch.Tensor]:
        """One (T, d) tensor per vector: exactly what the engine receives."""
        vectors = as_vectors(activations, self.meta.d_model)
        ids = torch.tensor([self.input_ids(prompt)] * vectors.shape[0])
        return list(self.embed(ids, vectors).unbind(0))


class AVBackend(Protocol):
    """Generates continuations from prompt embeddings. Returns per prompt (new token ids, hit max_new_tokens).

    keys (one per prompt, e.g. nla.fast.sampling.sample_key(act_id, sample)) name each prompt's random stream, for
    engines that sample per row (the fast path); the others seed once per call and ignore them."""

    def generate(self, embeds: list[torch.Tensor], params: SamplingParams,
                 keys: Sequence[int | str] | None = None) -> list[tuple[list[int], bool]]: ...


class HFBackend:
    """transformers `generate` on left-padded inputs_embeds, batched.

    `sharded=True` for an FSDP-sharded model (training): every rank keeps stepping until all ranks are done (HF's
    synced_gpus; each step's forward is collective), under no_grad rather than inference_mode (the parameters FSDP
    gathers here are reused by training, which cannot touch inference tensors)."""

    def __init__(self, model: Any, tokenizer: Any, eos_ids: set[int], *, sharded: bool = False) -> None:
        self.model, self.tokenizer, self.eos_ids, self.sharded = model, tokenizer, eos_ids, sharded
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)

    def generate(self, embeds: list[torch.Tensor], params: SamplingParams,
                 keys: Sequence[int | str] | None = None) -> list[tuple[list[int], bool]]:
        return [(toks, stop is None and len(toks) >= params.max_new_tokens)
                for toks, stop in self.generate_with_stops(embeds, params)]

    def generate_with_stops(self, embeds: list[torch.Tensor], params: SamplingParams,
                            keys: Sequence[int | str] | None = None) -> list[tuple[list[int], int | None]]:
        """Per prompt: the new tokens before the stop token, and the stop token the model chose (None if it chose
        none: cut at max_new_tokens). GRPO scores that stop token as part of the response."""
        with torch.no_grad() if self.sharded else torch.inference_mode():
            return self._generate(embeds, params)

    def _generate(self, embeds: list[torch.Tensor], params: SamplingParams) -> list[tuple[list[int], int | None]]:
        lengths = [e.shape[0] for e in embeds]
        T, d = max(lengths), embeds[0].shape[1]
        batch = embeds[0].new_zeros((len(embeds), T, d))  # (B, T, d), left padded
        mask = torch.zeros((len(embeds), T), dtype=torch.long, device=batch.device)
        for i, e in enumerate(embeds):
            batch[i, T - e.shape[0]:] = e
            mask[i, T - e.shape[0]:] = 1
        if params.seed is not None:
            torch.manual_seed(params.seed)
        # top_k=0 by default: plain temperature/top-p sampling, as the release and vLLM do (HF's default is 50)
        sample = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p,
                                           "top_k": params.top_k}
        out = self.model.generate(
            inputs_embeds=batch, attention_mask=mask, max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy, pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None, synced_gpus=self.sharded, **sample,
        )  # (B, new): only generated tokens when prompting with embeddings
        results: list[tuple[list[int], int | None]] = []
        for row in out.tolist():
            stop = next((i for i, t in enumerate(row) if t in self.eos_ids), None)
            results.append((row, None) if stop is None else (row[:stop], row[stop]))
        return results


def decode_generations(tokenizer: Any, outputs: list[tuple[list[int], bool]]) -> list[Generation]:
    gens = []
    for toks, hit_limit in outputs:
        raw = tokenizer.decode(toks, skip_special_tokens=True)
        explanation, status = parse_explanation(raw, hit_limit=hit_limit)
        gens.append(Generation(explanation=explanation, raw_output=raw, status=status, n_tokens=len(toks)))
    return gens
