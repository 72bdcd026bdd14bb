"""Neuronpedia's NLA API (hijohnnylin/neuronpedia apps/nla) on our Serve app, under /neuronpedia (or at the root).

`NeuronpediaMount` is a mixin of the ingress: its routes translate their requests into calls of the ingress's own
helpers and deployments (the extractor, AV and AR that /v1 uses), and our results into their response shapes and
SSE frames. Nothing about models, batching or scoring lives here. Their contract: GET / (health JSON with limits),
POST /explain /describe /score /compare /extract /tokenize /completion; streams as `data: {json}` frames ending in
`data: [DONE]`; errors as {"detail": ...}; a full /explain gate answers 429 at once. docs/neuronpedia.md lists the
fields that have no meaning here and what is returned instead. Auth and the root rewrite live in serve/security.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from nla.errors import NLAInputError
from nla.serve.codec import decode_vector, decode_vectors
from nla.serve.neuronpedia import api
from nla.serve.security import RequestTooLarge, ServiceUnavailable, error_status

router = APIRouter(tags=["neuronpedia"])
MOUNT_STATUS = {RequestTooLarge: 400, ServiceUnavailable: 503}  # their shapes: limits are 400, missing models 503


def mount_error(request: Request, e: Exception) -> JSONResponse:
    """Any failure on the mount in their shape: {"detail": ...} with their status codes."""
    if isinstance(e, RequestValidationError):  # FastAPI's own answer, which their server gives unchanged
        return JSONResponse({"detail": jsonable_encoder(e.errors())}, status_code=422)
    if isinstance(e, HTTPException):
        return JSONResponse({"detail": e.detail}, status_code=e.status_code, headers=getattr(e, "headers", None))
    status, message, _ = error_status(e)
    status = next((s for cls, s in MOUNT_STATUS.items() if isinstance(e, cls)), status)
    return JSONResponse({"detail": message}, status_code=status)


def frame(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


def description(result: dict[str, Any]) -> str:
    """Their `description` is always a string: the explanation when the AV closed its tags, else what it wrote
    (the text after an unclosed <explanation>, or the raw output)."""
    if result["status"] == "ok":
        return result["explanation"]
    raw = result["raw_output"]
    return raw.split("<explanation>", 1)[1].strip() if "<explanation>" in raw else raw.strip()


def _scores(result: dict[str, Any]) -> dict[str, Any]:
    return {"description": description(result), "mse": result["mse"], "cosine_similarity": result["cos"]}


class NeuronpediaMount:
    """Routes of the Neuronpedia mount; mixed into nla.serve.ingress.Ingress (uses its extractor, av, ar, info, limits
    and helpers: _extract, _explain, _scored, _need, _text, _cap)."""

    np_explains = 0  # /explain requests in flight on this replica (their fail-fast gate)

    # ---- translation helpers ------------------------------------------------------------------------------------
    def _np_sampling(self, req: api.Generating) -> dict[str, Any]:
        from nla.av import SamplingParams

        self._cap(req.max_new_tokens, self.limits.max_new_tokens, "max_new_tokens")
        sampling = {"temperature": req.temperature, "top_p": 1.0, "max_new_tokens": req.max_new_tokens, "seed": None}
        SamplingParams(**sampling)  # a refused temperature is this request's 400, before any stream starts
        return sampling

    async def _np_tokens(self, req: api.ChatInput) -> dict[str, Any]:
        handle = self._need(self.extractor, "base model")
        messages = req.message_dicts()
        if messages is None:
            if not req.text:
                raise NLAInputError("Provide either `text` or `messages`. Fix: send {\"text\": \"...\"} or chat "
                                    "messages [{\"role\": \"user\", \"content\": \"...\"}].")
            self._text(req.text, "text")
        got = await handle.tokenize.remote(req.text, messages, **req.template_options())
        self._cap(len(got["text"]), self.limits.max_text_chars, "text length in characters (rendered)")
        return got

    def _np_positions(self, tokens: list[dict[str, Any]], positions: list[int] | None, reverse: bool) -> list[int]:
        n = len(tokens)
        if not positions:
            chosen = [t["position"] for t in tokens if not t["special"]]
            if not chosen:
                raise NLAInputError("No tokens extracted: the text has only special tokens. Fix: send some text.")
        else:
            chosen = []
            for p in positions:
                i = p if p >= 0 else n + p
                if not 0 <= i < n:
                    raise NLAInputError(f"Position {p} out of range (0..{n - 1}). Fix: use an index into the "
                                        f"{n} tokens (negative counts from the end); POST /tokenize lists them.")
                if tokens[i]["special"]:
                    raise NLAInputError(f"Position {p} is the special token {tokens[i]['token']!r}, which this server "
                                        "does not explain (its activation is not a content vector). Fix: pick another "
                                        "position, or omit positions for every readable one.")
                chosen.append(i)
        if len(chosen) > self.limits.max_vectors:
            raise RequestTooLarge(f"resolved {len(chosen)} positions from text of {n} tokens, but max is "
                                  f"{self.limits.max_vectors} per request. Fix: pass an explicit `positions` list "
                                  "to scope it down.")
        return chosen[::-1] if reverse else chosen

    def _np_result(self, tok: dict[str, Any], vector: np.ndarray, result: dict[str, Any]) -> dict[str, Any]:
        return {"token": tok["token"], "token_id": tok["token_id"], "position": tok["position"],
                "l2_norm": float(np.linalg.norm(vector)), **_scores(result), "generated": False,
                **{k: tok[k] for k in ("fragment_index", "fragment_count", "role", "section", "channel",
                                       "message_index")}}

    async def _np_stream(self, vectors: np.ndarray, sampling: dict[str, Any]
                         ) -> AsyncIterator[tuple[int, str] | list[dict[str, Any]]]:
        """(row, raw text so far) while the AV decodes, then the scored results (as _explain gives them)."""
        stream = self.av.options(stream=True).explain_stream.remote((vectors, sampling))
        async for item in stream:
            if item is None:
                continue
            if isinstance(item, BaseException):
                raise item
            if "partial" in item:
                for row, text in item["partial"].items():
                    yield row, text
            else:
                yield await self._scored(item["results"], vectors)

    def _np_gate(self) -> None:
        if self.np_explains >= self.limits.max_concurrent_explains:
            raise HTTPException(429, f"All {self.limits.max_concurrent_explains} /explain slot(s) in use. Please "
                                     "retry (the server's limits.max_concurrent_explains).")
        self.np_explains += 1

    def _np_release(self) -> None:
        self.np_explains -= 1

    # ---- routes -------------------------------------------------------------------------------------------------
    @router.get("", include_in_schema=False)
    @router.get("/", summary="Neuronpedia health: the loaded models and this server's limits")
    async def np_health(self) -> dict[str, Any]:
        info, lim, mount = self.info, self.limits, self.mount
        base, ar = info["base"], info["ar"]
        device = mount["device"]
        return {
            "status": "ok", "verbalizer_model": info["av"]["id"], "d_model": self.d,
            "verbalizer_quantization": None, "verbalizer_kv_cache_dtype": None, "verbalizer_cuda_graph_max_bs": None,
            "verbalizer_torch_compile": False, "verbalizer_device": device,
            "reconstructor_available": ar is not None, "reconstructor_fp8": False if ar else None,
            "reconstructor_int4": False if ar else None, "reconstructor_device": device if ar else None,
            "source_model": base["id"] if base else None, "extraction_layer": info["layer"] if base else None,
            "source_truncated": True if base else None, "source_fp8": False if base else None,
            "source_device": device if base else None, "completion_available": False,
            "num_cuda_devices": 1 if device.startswith("cuda") else 0,
            "max_concurrent": mount["av_batch"], "max_concurrent_explains": lim.max_concurrent_explains,
            "source_max_concurrent": mount["extractor_in_flight"],
            "reconstructor_max_concurrent": mount["ar_in_flight"], "max_describe_requests": mount["av_in_flight"],
            "limits": {"max_input_chars": lim.max_text_chars, "max_positions_per_request": lim.max_vectors,
                       "max_new_tokens": lim.max_new_tokens, "max_describe_batch": lim.max_vectors,
                       "max_description_chars": lim.max_text_chars, "max_completion_tokens": 0},
        }

    @router.post("/explain", summary="text or chat messages -> a description per token position (SSE with stream)")
    async def np_explain(self, req: api.ExplainRequest) -> Any:
        sampling = self._np_sampling(req)
        self._need(self.extractor, "base model")
        self._np_gate()
        streaming = False
        try:
            got = await self._np_tokens(req)
            tokens = got["tokens"]
            positions = self._np_positions(tokens, req.positions, req.reverse)
            vectors = (await self._extract(got["text"], positions))["vectors"]  # (n, d), in the order asked
            if req.stream:
                streaming = True
                return StreamingResponse(self._np_explain_frames(tokens, positions, vectors, sampling),
                                         media_type="text/event-stream")
            results = await self._explain(vectors, sampling)
            return {"layer_index": self.info["layer"],
                    "results": [self._np_result(tokens[p], v, r) for p, v, r in zip(positions, vectors, results)]}
        finally:
            if not streaming:
                self._np_release()

    async def _np_explain_frames(self, tokens: list[dict[str, Any]], positions: list[int], vectors: np.ndarray,
                                 sampling: dict[str, Any]) -> AsyncIterator[str]:
        try:
            yield frame({"layer_index": self.info["layer"], "total": len(positions), "prompt_length": len(tokens)})
            async for event in self._np_stream(vectors, sampling):
                if isinstance(event, tuple):
                    yield frame({"position": positions[event[0]], "text": event[1], "done": False})
                else:
                    for p, v, r in zip(positions, vectors, event):
                        yield frame(self._np_result(tokens[p], v, r))
            yield DONE
        finally:
            self._np_release()

    @router.post("/describe", summary="activation vectors -> descriptions, with mse/cos (SSE with stream)")
    async def np_describe(self, req: api.DescribeRequest) -> Any:
        sampling = self._np_sampling(req)
        vectors = decode_vectors(req.activations, self.d, field="activations")
        self._cap(len(vectors), self.limits.max_vectors, "activations: number of vectors")
        if req.stream:
            return StreamingResponse(self._np_describe_frames(vectors, sampling), media_type="text/event-stream")
        return {"results": [_scores(r) for r in await self._explain(vectors, sampling)]}

    async def _np_describe_frames(self, vectors: np.ndarray, sampling: dict[str, Any]) -> AsyncIterator[str]:
        async for event in self._np_stream(vectors, sampling):
            if isinstance(event, tuple):
                yield frame({"index": event[0], "text": event[1], "done": False})
            else:
                for r in event:
                    yield frame(_scores(r))
        yield DONE

    @router.post("/score", summary="a description + the original activation -> mse and cosine_similarity")
    async def np_score(self, req: api.ScoreRequest) -> dict[str, float]:
        ar = self._need(self.ar, "AR")
        text = self._text(req.description, "description")
        v = decode_vector(req.activation, self.d, field="activation")
        scores = await ar.score.remote([text], v[None])
        return {"mse": scores["mse"][0], "cosine_similarity": scores["cos"][0]}

    @router.post("/compare", summary="two activations -> a description of a - b, its norm, mse/cos")
    async def np_compare(self, req: api.CompareRequest) -> dict[str, Any]:
        sampling = self._np_sampling(req)
        a = decode_vector(req.activation_a, self.d, field="activation_a")
        b = decode_vector(req.activation_b, self.d, field="activation_b")
        diff = a - b
        if not np.any(diff):
            raise NLAInputError("activation_a and activation_b are the same vector, so a - b has no direction. Fix: "
                                "compare two different activations.")
        (r,) = await self._explain(diff[None], sampling)
        return {**_scores(r), "diff_norm": float(np.linalg.norm(diff.astype(np.float64)))}

    @router.post("/extract", summary="text or chat messages -> the activation at every readable token")
    async def np_extract(self, req: api.ExtractRequest) -> dict[str, Any]:
        got = await self._np_tokens(req)
        positions = self._np_positions(got["tokens"], None, reverse=False)
        vectors = (await self._extract(got["text"], positions))["vectors"]
        tokens = got["tokens"]
        return {"layer_index": self.info["layer"],
                "tokens": [{"token": tokens[p]["token"], "token_id": tokens[p]["token_id"], "position": p,
                            "activation": v.tolist(), "l2_norm": float(np.linalg.norm(v))}
                           for p, v in zip(positions, vectors)]}

    @router.post("/tokenize", summary="text or chat messages -> tokens with byte-fragment runs and chat spans")
    async def np_tokenize(self, req: api.TokenizeRequest) -> dict[str, Any]:
        got = await self._np_tokens(req)
        keys = ("token", "token_id", "position", "fragment_index", "fragment_count", "role", "section", "channel",
                "message_index")
        return {"tokens": [{k: t[k] for k in keys} for t in got["tokens"]], "prompt_length": len(got["tokens"]),
                "text": got["text"]}

    @router.post("/completion", summary="text generation by the base: 503 here (the base is loaded truncated)")
    async def np_completion(self, req: api.CompletionRequest) -> None:
        self._need(self.extractor, "base model")
        raise ServiceUnavailable(f"Source model is loaded in truncated mode (extraction-only): blocks past layer "
                                 f"{self.info['layer']} and the LM head are not loaded, so it cannot generate. Fix: "
                                 "call an external completion API for continuations, then /explain the text.")
