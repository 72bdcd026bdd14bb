"""The HTTP ingress: a FastAPI app (OpenAPI docs at /docs) that validates requests, applies the server's limits and
fans out to the model and lake deployments through Serve handles.

It holds no model: every tensor is computed by serve/models.py, every table read by serve/lake.py. Bad input answers
one JSON error `{"error": ..., "type": ...}` with a 4xx status (serve/security.py maps the errors). The web page in
serve/static/ is served from here; its own endpoints are in serve/explorer.py.
"""

from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from ray import serve
from starlette.exceptions import HTTPException

from nla.errors import NLAInputError
from nla.quality.flags import row_flags
from nla.serve import api
from nla.serve.codec import decode_vector, decode_vectors, encode_vector
from nla.serve.config import Limits
from nla.serve.explorer import ExplorerRoutes
from nla.serve.explorer import router as explorer_router
from nla.serve.neuronpedia.routes import NeuronpediaMount, mount_error, router
from nla.serve.security import MOUNT, Guard, RequestTooLarge, ServiceUnavailable, error_status, on_mount

STATIC = Path(__file__).parent / "static"
MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}  # anything else (a licence): text
PAGE_FILES = {p.name: MEDIA.get(p.suffix, "text/plain; charset=utf-8") for p in STATIC.iterdir() if p.is_file()}

app = FastAPI(title="NLA", version="1", description="Natural Language Autoencoders: explain activations in words "
              "(AV), reconstruct them from the words (AR), score the round trip (mse_nrm = 2(1 - cos)) and search "
              "the labeled lake. Vectors are lists of floats or base64 little-endian float32. Errors answer "
              '`{"error": message, "type": kind}`.')
app.state.guard = (None, Limits().max_body_bytes, False)  # (token digest, max body bytes, Neuronpedia at the root):
app.add_middleware(Guard, settings=lambda: app.state.guard)  # set by the replica on start
app.include_router(router, prefix=MOUNT)  # Neuronpedia's NLA API (serve/neuronpedia/), same deployments as /v1
app.include_router(explorer_router)  # the explorer page's lake views and token strip (serve/explorer.py)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    if on_mount(request.url.path):
        return mount_error(request, e)
    kind = request.headers.get("content-type", "none")
    if "json" not in kind:
        return JSONResponse({"error": f"body: expected JSON, got Content-Type {kind}. Fix: send a JSON object with "
                                      "'Content-Type: application/json'.", "type": "InvalidRequest"}, status_code=415)
    first = e.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", msg)
        where, msg = "body", f"not valid JSON at character {first['loc'][-1]} ({reason})"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return JSONResponse({"error": f"{where}: {msg}{more}. Fix: see /docs for this endpoint's request schema.",
                         "type": "InvalidRequest"}, status_code=422)


@app.exception_handler(HTTPException)
async def _http(request: Request, e: HTTPException) -> JSONResponse:
    if on_mount(request.url.path):
        return mount_error(request, e)
    if isinstance(e.__cause__, UnicodeDecodeError):  # FastAPI's answer to a body that is not UTF-8
        return JSONResponse({"error": f"body: not UTF-8 (byte {e.__cause__.start}). Fix: send the JSON body "
                                      "encoded as UTF-8.", "type": "InvalidRequest"}, status_code=400)
    hint = " Fix: see /docs for the endpoints." if e.status_code in (404, 405) else ""
    return JSONResponse({"error": f"{e.detail}.{hint}", "type": "HTTPError"}, status_code=e.status_code,
                        headers=getattr(e, "headers", None))


@app.exception_handler(Exception)
async def _error(request: Request, e: Exception) -> JSONResponse:
    if on_mount(request.url.path):
        return mount_error(request, e)
    status, message, kind = error_status(e)
    return JSONResponse({"error": message, "type": kind}, status_code=status)


def _raise_if_error(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


@serve.ingress(app)
class Ingress(NeuronpediaMount, ExplorerRoutes):
    def __init__(self, extractor: Any, av: Any, ar: Any, lake: Any, *, info: dict[str, Any], limits: Limits,
                 token_digest: str | None, mount: dict[str, Any]) -> None:
        self.extractor, self.av, self.ar, self.lake = extractor, av, ar, lake
        self.info, self.limits, self.d = info, limits, info["d_model"]
        self.mount = mount  # the Neuronpedia mount's settings (serve/app.py: mount_settings)
        app.state.guard = (token_digest, limits.max_body_bytes, mount["at_root"])

    # ---- checks -------------------------------------------------------------------------------------------------------
    def _cap(self, value: int, limit: int, name: str) -> None:
        if value > limit:
            raise RequestTooLarge(f"{name}: {value} is over this server's limit of {limit}. Fix: ask for at most "
                                  f"{limit} (or split the request).")

    def _text(self, value: str, name: str) -> str:
        if not value.strip():
            raise NLAInputError(f"{name} is empty. Fix: send some text, e.g. \"a heavy storm moved over oslo .\"")
        self._cap(len(value), self.limits.max_text_chars, f"{name} length in characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise NLAInputError(f"{name}: not valid UTF-8 (unpaired surrogate at character {e.start}). Fix: send "
                                "UTF-8 text.") from e
        return value

    def _need(self, handle: Any, what: str) -> Any:
        if handle is None:
            key = {"base model": "models.base", "AR": "models.ar"}[what]
            raise ServiceUnavailable(f"this server has no {what} loaded. Fix: start it with one, e.g. "
                                     f"`nla serve {key}=DIR`.")
        return handle

    def _vectors(self, value: Any, name: str = "vectors") -> np.ndarray:
        v = decode_vectors(value, self.d, field=name)
        self._cap(len(v), self.limits.max_vectors, f"{name}: number of vectors")
        return v

    def _sampling(self, req: api.Sampling) -> dict[str, Any]:
        self._cap(req.max_new_tokens, self.limits.max_new_tokens, "max_new_tokens")
        return {"temperature": req.temperature, "top_p": req.top_p, "max_new_tokens": req.max_new_tokens,
                "seed": req.seed}

    # ---- model calls ---------------------------------------------------------------------------------------------------
    async def _extract(self, text: str, positions: list[int] | None, sample: int | None = None, min_position: int = 0,
                       seed: int = 0) -> dict[str, Any]:
        handle = self._need(self.extractor, "base model")
        return _raise_if_error(await handle.extract.remote((text, positions, sample, min_position, seed)))

    async def _explain(self, vectors: np.ndarray, sampling: dict[str, Any], samples: int = 1) -> list[dict[str, Any]]:
        """One result per (vector, sample): the Generation fields, plus mse/cos of ok samples when an AR is loaded."""
        reps = np.repeat(vectors, samples, axis=0)  # (n * samples, d)
        results = _raise_if_error(await self.av.explain.remote((reps, sampling)))
        for i, r in enumerate(results):
            r.update(sample=i % samples)
        return await self._scored(results, reps)

    async def _scored(self, results: list[dict[str, Any]], vectors: np.ndarray) -> list[dict[str, Any]]:
        """Each AV result with mse/cos against its vector (scored when ok and an AR is loaded, else None) and the
        quality flags it gets from itself (nla/quality/flags.py: degenerate, truncated, no_tags; the lake-wide
        template and low_norm need a lake's rows, so live results never carry them)."""
        for r in results:
            r.update(mse=None, cos=None, flags=row_flags(r["explanation"], r["raw_output"], r["status"]))
        ok = [i for i, r in enumerate(results) if r["status"] == "ok"]
        if self.ar is not None and ok:
            scores = await self.ar.score.remote([results[i]["explanation"] for i in ok], vectors[ok])
            for j, i in enumerate(ok):
                results[i].update(mse=scores["mse"][j], cos=scores["cos"][j])
        return results

    async def _source(self, src: api.Source, name: str) -> np.ndarray:
        if src.vector is not None:
            return decode_vector(src.vector, self.d, field=f"{name}.vector")
        got = await self._extract(self._text(src.text, f"{name}.text"), [src.position])
        return got["vectors"][0]

    # ---- endpoints -----------------------------------------------------------------------------------------------------
    @app.post("/v1/extract", summary="text -> tokens, and activations at given or sampled positions")
    async def extract(self, req: api.ExtractRequest) -> dict[str, Any]:
        self._cap(len(req.positions or []), self.limits.max_vectors, "positions: count")
        self._cap(req.sample or 0, self.limits.max_vectors, "sample")
        got = await self._extract(self._text(req.text, "text"), req.positions, req.sample, req.min_position, req.seed)
        tokens = got["tokens"]
        acts = [{"position": p, "token": tokens[p]["token"], "vector": encode_vector(v, req.encoding)}
                for p, v in zip(got["positions"], got["vectors"])]
        return {"layer": self.info["layer"], "d_model": self.d, "truncated": got["truncated"], "tokens": tokens,
                "activations": acts}

    @app.post("/v1/explain", summary="vectors (or text + positions) -> explanations, with mse/cos when an AR is loaded")
    async def explain(self, req: api.ExplainRequest) -> dict[str, Any]:
        sampling = self._sampling(req)
        self._cap(req.samples, self.limits.max_samples, "samples")
        if req.text is not None:
            self._cap(len(req.positions), self.limits.max_vectors, "positions: count")
            got = await self._extract(self._text(req.text, "text"), req.positions)
            vectors = got["vectors"]
            where = [{"position": p, "token": got["tokens"][p]["token"]} for p in got["positions"]]
        else:
            vectors = self._vectors(req.vectors)
            where = [{"index": i} for i in range(len(vectors))]
        results = await self._explain(vectors, sampling, req.samples)
        for i, r in enumerate(results):
            r.update(where[i // req.samples])
            if req.return_vectors:
                r["vector"] = encode_vector(vectors[i // req.samples], req.encoding)
        return {"av": self.info["av"]["id"], "ar": self.info["ar"]["id"] if self.info["ar"] else None,
                "results": results}

    @app.post("/v1/reconstruct", summary="explanations -> the AR's reconstructed vectors")
    async def reconstruct(self, req: api.ReconstructRequest) -> dict[str, Any]:
        texts = self._explanations(req.explanations)
        r = await self._need(self.ar, "AR").reconstruct.remote(texts)
        return {"ar": self.info["ar"]["id"], "d_model": self.d, "vectors": [encode_vector(v, req.encoding) for v in r]}

    @app.post("/v1/score", summary="explanations + original vectors -> mse_nrm and cos of each reconstruction")
    async def score(self, req: api.ScoreRequest) -> dict[str, Any]:
        texts = self._explanations(req.explanations)
        vectors = self._vectors(req.vectors)
        if len(vectors) != len(texts):
            raise NLAInputError(f"got {len(texts)} explanations but {len(vectors)} vectors. Fix: pair them 1:1.")
        scores = await self._need(self.ar, "AR").score.remote(texts, vectors)
        return {"ar": self.info["ar"]["id"], **scores}

    @app.post("/v1/compare", summary="explain a, b and their difference a - b")
    async def compare(self, req: api.CompareRequest) -> dict[str, Any]:
        sampling = self._sampling(req)
        a, b = await self._source(req.a, "a"), await self._source(req.b, "b")
        diff = a - b
        if not np.any(diff):
            raise NLAInputError("a and b are the same vector, so a - b has no direction. Fix: compare two different "
                                "activations.")
        ra, rb, rd = await self._explain(np.stack([a, b, diff]), sampling)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        cos_ab = float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))
        return {"a": ra, "b": rb, "difference": rd, "cos_ab": cos_ab}

    @app.post("/v1/search", summary="nearest labeled activations to a text (via the AR) or a vector; or keyword search")
    async def search(self, req: api.SearchRequest) -> dict[str, Any]:
        self._cap(req.k, self.limits.max_k, "k")
        if req.keyword is not None:
            if not req.keyword.strip():
                raise NLAInputError("keyword is empty. Fix: send a word or a regex, e.g. \"rain|storm\".")
            return {"mode": "keyword", "results": await self.lake.keyword.remote(req.keyword, req.k)}
        if req.text is not None:
            text = self._text(req.text, "text")
            vector = (await self._need(self.ar, "AR").reconstruct.remote([text]))[0]
        else:
            vector = decode_vector(req.vector, self.d)
        found = await self.lake.nearest.remote(vector, req.k, req.exact)
        return {"mode": "text" if req.text is not None else "vector", **found}

    @app.post("/v1/query", summary="one read-only SQL SELECT over the lake, with a row limit and a timeout")
    async def query(self, req: api.QueryRequest) -> dict[str, Any]:
        self._cap(req.limit, self.limits.query_max_rows, "limit")
        return await self.lake.query.remote(req.sql, req.limit)

    @app.get("/v1/models", summary="the loaded checkpoints (sidecars), the lake and this server's limits")
    async def models(self) -> dict[str, Any]:
        return {**self.info, "lake": await self.lake.info.remote(), "limits": vars(self.limits)}

    @app.get("/healthz", summary="liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(self, name: str) -> FileResponse:
        if name not in PAGE_FILES:
            raise HTTPException(404, f"no page file {name!r}")
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name])

    def _explanations(self, texts: list[str]) -> list[str]:
        self._cap(len(texts), self.limits.max_explanations, "explanations: count")
        return [self._text(t, f"explanations[{i}]") for i, t in enumerate(texts)]
