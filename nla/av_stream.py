"""Streaming AV generation: the HF backend's own `generate` call, with each step's tokens decoded as they arrive.

`stream_generations` runs `HFBackend.generate` unchanged (same sampling, stop tokens and padding, so a streamed
explanation equals the buffered one for the same seed) in a worker thread, with a transformers streamer that hands
every decoding step's tokens to the caller. The caller gets `Partial` updates (the cumulative raw text of each row
whose text changed) and, last, the rows' `Generation`s. Closing the iterator early stops the generation at its next
step. It does not batch requests, score explanations or know about HTTP (serve/ does). The vLLM backend does not
stream here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from nla.av import Generation, HFBackend, SamplingParams, decode_generations


@dataclass
class Partial:
    """Rows whose decoded text changed in one decoding step: row index -> the raw output so far (cumulative)."""

    texts: dict[int, str]


class _QueueStreamer:
    """transformers' streamer protocol: the prompt once (skipped), then one (B,) tensor per step, then end()."""

    def __init__(self, out: queue.Queue) -> None:
        self.out, self.prompt_seen = out, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt ids ((B, 0) with inputs_embeds)
            self.prompt_seen = True
            return
        self.out.put(("step", value.reshape(-1).tolist()))

    def end(self) -> None:
        pass


class _Cancelled:
    """A stopping criterion that ends every row once `event` is set (the caller went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _StreamingModel:
    """The backend's model, whose generate() also gets the streamer and the cancel criterion; all else delegates."""

    def __init__(self, model: Any, streamer: _QueueStreamer, cancel: threading.Event) -> None:
        self._model, self._streamer, self._cancel = model, streamer, cancel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, **kwargs: Any) -> Any:
        from transformers import StoppingCriteriaList

        return self._model.generate(**kwargs, streamer=self._streamer,
                                    stopping_criteria=StoppingCriteriaList([_Cancelled(self._cancel)]))


def stream_generations(backend: HFBackend, embeds: list[torch.Tensor], params: SamplingParams
                       ) -> Iterator[Partial | list[Generation]]:
    """Partial updates while `backend` generates from `embeds`, then one Generation per prompt (the same ones
    `decode_generations(backend.generate(...))` gives)."""
    if not isinstance(backend, HFBackend) or backend.sharded:
        raise TypeError("stream_generations needs an unsharded HFBackend (the vLLM backend does not stream here)")
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    streaming = HFBackend(_StreamingModel(backend.model, _QueueStreamer(events), cancel), backend.tokenizer,
                          backend.eos_ids)
    streaming.pad_id = backend.pad_id

    def work() -> None:
        try:
            events.put(("done", streaming.generate(embeds, params)))
        except BaseException as e:  # handed to the caller's thread, raised there
            events.put(("error", e))

    thread = threading.Thread(target=work, name="av-stream", daemon=True)
    thread.start()
    tokens: list[list[int]] = [[] for _ in embeds]
    finished = [False] * len(embeds)
    texts = [""] * len(embeds)
    try:
        while True:
            kind, value = events.get()
            if kind == "error":
                raise value
            if kind == "done":
                yield decode_generations(backend.tokenizer, value)
                return
            changed: dict[int, str] = {}
            for row, tok in enumerate(value):
                if finished[row]:
                    continue
                if tok in backend.eos_ids:
                    finished[row] = True
                    continue
                tokens[row].append(tok)
                # a glyph split over byte-level tokens decodes to U+FFFD until its last byte arrives: hold it back
                text = backend.tokenizer.decode(tokens[row], skip_special_tokens=True).rstrip("\ufffd")
                if text != texts[row]:
                    texts[row] = changed[row] = text
            if changed:
                yield Partial(changed)
    finally:
        cancel.set()  # a caller that stopped early stops the generation at its next step
        thread.join()
