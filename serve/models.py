"""The model deployments: extractor (base model, blocks 0..K), AV and AR, each batching requests with @serve.batch.

Each class loads its model once in __init__ and merges concurrent requests into one model call. The model work runs
on the replica's user-code event loop itself (Serve keeps health checks on another loop): requests that arrive during
a batch wait there and form the next batch. Run in a worker thread instead, the model held the GIL while the loop
took requests in one by one, and batches stayed at 1-3 requests (explain throughput 2.5x lower). Bad input inside a batch must not fail its
neighbours: per-item problems come back as NLAInputError objects that the ingress raises for that request alone.
Request validation, limits and HTTP live in serve/ingress.py; serve/app.py decides resources and replicas.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from nla.errors import NLAInputError
from nla.settings import torch_dtype
from nla.serve.config import DeploymentSettings

_ticket = itertools.count()


def _setup(settings: DeploymentSettings, *methods: Any) -> None:
    if settings.threads > 0:
        import torch

        torch.set_num_threads(settings.threads)
    for method in methods:
        method.set_max_batch_size(settings.max_batch_size)
        method.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)


def _sampling_groups(items: list[tuple[np.ndarray, dict]]) -> list[list[int]]:
    """Indices of the AV requests that can share one generate call: equal sampling; a seeded request alone, so the
    same request gives the same samples."""
    groups: dict[tuple, list[int]] = {}
    for i, (_, sampling) in enumerate(items):
        key = tuple(sorted(sampling.items()))
        if sampling.get("seed") is not None:
            key += (("ticket", next(_ticket)),)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class ExtractorModel:
    """Text -> its tokens, and block K's output at given or sampled positions."""

    def __init__(self, folder: str, layer: int, settings: DeploymentSettings, *, device: str, dtype: str,
                 max_tokens: int, max_positions: int) -> None:
        from nla.extract import Extractor
        from nla.extract_config import ExtractConfig

        self.ext = Extractor.from_pretrained(folder, ExtractConfig(layer=layer, max_length=max_tokens), device=device,
                                             dtype=torch_dtype(dtype))
        self.max_tokens, self.max_positions = max_tokens, max_positions
        _setup(settings, self.extract)

    def _plan(self, text: str, positions: list[int] | None, sample: int | None, min_position: int,
              seed: int) -> dict[str, Any]:
        """Tokens of `text` and the positions to read (checked): the per-request part, before the shared forward."""
        from nla.extract_config import doc_id_for, position_rng

        from nla.chat import encode

        tok = self.ext.tokenizer
        ids = encode(tok, text, max_length=self.max_tokens)
        special = [i in self.ext.special_ids for i in ids]
        tokens = [{"position": p, "token_id": i, "token": tok.decode([i]), "special": s}
                  for p, (i, s) in enumerate(zip(ids, special))]
        eligible = [p for p, s in enumerate(special) if not s]
        if sample is not None:
            pool = [p for p in eligible if p >= min_position]
            if len(pool) > sample:
                pool = sorted(pool[i] for i in position_rng(seed, doc_id_for(text)).choice(len(pool), sample,
                                                                                          replace=False))
            positions = pool
        positions = eligible if positions is None else positions
        if len(positions) > self.max_positions:
            raise NLAInputError(f"{len(positions)} positions asked for; the server reads at most {self.max_positions} "
                                "per request. Fix: pass positions (or sample) with fewer, or [] for tokens only.")
        bad = [p for p in positions if not (0 <= p < len(ids)) or special[p]]
        if bad:
            readable = f"{eligible[0]}..{eligible[-1]}" if eligible else "none"
            raise NLAInputError(f"positions {bad[:5]}: not readable in this text, which has {len(ids)} tokens "
                                f"(readable: {readable}; special tokens are not). Fix: POST /v1/extract with "
                                "positions [] to list the tokens.")
        return {"ids": ids, "tokens": tokens, "positions": list(positions), "truncated": len(ids) >= self.max_tokens}

    def _forward(self, plans: list[dict[str, Any]]) -> None:
        """One right-padded forward for every plan that reads positions; adds plan['vectors'] (n, d)."""
        import torch

        todo = [p for p in plans if p["positions"]]
        for p in plans:
            p["vectors"] = np.zeros((0, self.ext.d_model), np.float32)
        if not todo:
            return
        width = max(len(p["ids"]) for p in todo)
        pad = self.ext.tokenizer.pad_token_id or 0
        ids = torch.tensor([p["ids"] + [pad] * (width - len(p["ids"])) for p in todo])  # (B, T)
        mask = torch.tensor([[1] * len(p["ids"]) + [0] * (width - len(p["ids"])) for p in todo])
        h = self.ext.block_output(ids, mask).float().cpu()  # (B, T, d); right padding: positions index directly
        for b, p in enumerate(todo):
            p["vectors"] = h[b, p["positions"]].numpy()

    def _run(self, items: list[tuple]) -> list[Any]:
        plans: list[Any] = []
        for item in items:
            try:
                plans.append(self._plan(*item))
            except NLAInputError as e:
                plans.append(e)
        self._forward([p for p in plans if isinstance(p, dict)])
        for p in plans:
            if isinstance(p, dict):
                del p["ids"]
        return plans

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def extract(self, items: list[tuple]) -> list[Any]:
        """items: (text, positions | None, sample | None, min_position, seed) -> {tokens, positions, vectors,
        truncated} or an NLAInputError, per item."""
        return self._run(items)

    async def tokenize(self, text: str | None, messages: list[dict[str, Any]] | None = None, *,
                       add_generation_prompt: bool = True, continue_final_message: bool = False,
                       enable_thinking: bool | None = None) -> dict[str, Any]:
        """Text, or chat messages rendered by the base's chat template -> {text, truncated, tokens}: per token its
        position, token_id, display text with byte-fragment run, special flag and chat span (None fields for text).
        The same ids `extract` reads for that text."""
        from nla.chat import chat_spans, encode, render_chat, token_pieces

        tok = self.ext.tokenizer
        if messages:
            text = render_chat(tok, messages, add_generation_prompt=add_generation_prompt,
                               continue_final_message=continue_final_message, enable_thinking=enable_thinking)
        assert text is not None, "the caller checks that text or messages is given"
        ids = encode(tok, text, max_length=self.max_tokens)
        no_span = {"role": None, "section": None, "channel": None, "message_index": None}
        spans = (chat_spans(tok, messages, text, ids, continue_final_message=continue_final_message,
                            enable_thinking=enable_thinking) if messages else [no_span] * len(ids))
        tokens = [{"token": piece, "token_id": i, "position": p, "fragment_index": f, "fragment_count": n,
                   "special": i in self.ext.special_ids, **span}
                  for p, (i, (piece, f, n), span) in enumerate(zip(ids, token_pieces(tok, ids), spans))]
        return {"text": text, "truncated": len(ids) >= self.max_tokens, "tokens": tokens}


class AVModel:
    """Vectors -> explanations (one Generation dict per vector), requests with equal sampling merged."""

    def __init__(self, folder: str, settings: DeploymentSettings, *, device: str, dtype: str) -> None:
        from nla.client import NLAClient

        self.client = NLAClient(folder, device=device, dtype=torch_dtype(dtype))
        _setup(settings, self.explain, self._explain_stream_batch)

    def _run(self, items: list[tuple[np.ndarray, dict]]) -> list[Any]:
        out: list[Any] = [None] * len(items)
        for idx in _sampling_groups(items):
            vectors = np.concatenate([items[i][0] for i in idx])  # (sum n, d)
            gens = self.client.explain(vectors, **items[idx[0]][1])
            start = 0
            for i in idx:
                n = len(items[i][0])
                out[i] = [vars(g) for g in gens[start:start + n]]
                start += n
        return out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def explain(self, items: list[tuple[np.ndarray, dict]]) -> list[Any]:
        """items: ((n, d) float32 vectors, sampling kwargs) -> n dicts (explanation, raw_output, status, n_tokens)."""
        return self._run(items)

    async def explain_stream(self, item: tuple[np.ndarray, dict]) -> AsyncIterator[Any]:
        """`explain`, streamed (call with handle.options(stream=True)): {"partial": {row: raw text so far}} while
        tokens are decoded, then {"results": the n dicts `explain` gives}; None when a step had nothing for this
        request; an NLAInputError when its sampling is refused. (A plain async generator in front of the batched one:
        Serve runs a @serve.batch generator method itself in a thread, where it cannot stream.)"""
        async for out in self._explain_stream_batch(item):
            yield out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _explain_stream_batch(self, items: list[tuple[np.ndarray, dict]]) -> AsyncIterator[list[Any]]:
        """One yield per decoding step, one entry per request. Requests with equal sampling generate together,
        groups one after another."""
        from nla.av_stream import Partial

        for idx in _sampling_groups(items):
            starts = np.cumsum([0] + [len(items[i][0]) for i in idx])
            vectors = np.concatenate([items[i][0] for i in idx])  # (sum n, d)
            stream = self.client.explain_stream(vectors, **items[idx[0]][1])
            try:
                while (event := await asyncio.to_thread(next, stream, None)) is not None:
                    out: list[Any] = [None] * len(items)
                    for j, i in enumerate(idx):
                        lo, hi = starts[j], starts[j + 1]
                        if isinstance(event, Partial):
                            texts = {int(r - lo): t for r, t in event.texts.items() if lo <= r < hi}
                            out[i] = {"partial": texts} if texts else None
                        else:
                            out[i] = {"results": [vars(g) for g in event[lo:hi]]}
                    yield out
            except NLAInputError as e:
                yield [e if i in idx else None for i in range(len(items))]
            finally:
                stream.close()
            yield [StopIteration if i in idx else None for i in range(len(items))]


class ARModel:
    """Explanations -> reconstructed vectors; score = mse_nrm and cos against the originals."""

    def __init__(self, folder: str, settings: DeploymentSettings, *, device: str, dtype: str) -> None:
        from nla.client import NLACritic

        self.critic = NLACritic(folder, device=device, dtype=torch_dtype(dtype))
        _setup(settings, self.reconstruct)

    def _run(self, items: list[list[str]]) -> list[np.ndarray]:
        r = self.critic.reconstruct_batch([e for texts in items for e in texts]).numpy()  # (sum n, d)
        bounds = np.cumsum([0] + [len(t) for t in items])
        return [r[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def reconstruct(self, items: list[list[str]]) -> list[np.ndarray]:
        """items: n explanations -> (n, d) float32 raw reconstructions."""
        return self._run(items)

    async def score(self, explanations: list[str], vectors: np.ndarray) -> dict[str, list[float]]:
        """mse_nrm (0 perfect, 2 orthogonal) and cos of each explanation's reconstruction against its vector."""
        import torch

        from nla.metrics import cosine, mse_nrm

        r = torch.from_numpy(await self.reconstruct(explanations))
        v = torch.from_numpy(np.asarray(vectors, np.float32))
        return {"mse": mse_nrm(r, v, self.critic.mse_scale).tolist(), "cos": cosine(r, v).tolist()}
