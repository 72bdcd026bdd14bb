"""The explorer page's endpoints: the lake's overview, progress, a page of labels, a document, recipes, a comparison
of two recipes, and the token strip (every token of a text explained and scored in one batch).

`ExplorerRoutes` is a mixin of the ingress (serve/ingress.py): the lake routes hand typed requests to the lake
deployment (serve/lake.py, which aggregates and pages in DuckDB: a page asks for kilobytes, never a table), and the
strip uses the ingress's own extract/explain helpers, exactly as /v1/explain does. No SQL and no model code here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from nla.errors import NLAInputError
from nla.lake.browse import LabelFilter
from nla.serve import api
from nla.serve.codec import encode_vector

router = APIRouter(tags=["explorer"])


class ExplorerRoutes:
    """Routes of the explorer; mixed into nla.serve.ingress.Ingress (uses its lake, extractor, info, limits and the
    helpers _text, _cap, _sampling, _need, _extract and _explain)."""

    @router.get("/v1/lake/overview", summary="the lake at a glance: row counts, mse histogram per recipe, recipes, "
                "top features, recent runs, fve_nrm per run, running jobs' progress")
    async def lake_overview(self) -> dict[str, Any]:
        return await self.lake.overview.remote()

    @router.get("/v1/lake/progress", summary="running jobs' progress (shards committed of total, rate, ETA, errors) "
                "and the recent runs")
    async def lake_progress(self) -> dict[str, Any]:
        return await self.lake.progress.remote()

    @router.post("/v1/lake/labels", summary="one page of labels: filters, sort, page; with the total and the SQL")
    async def lake_labels(self, req: api.LabelsRequest) -> dict[str, Any]:
        return await self.lake.labels.remote(LabelFilter(**asdict(req)))

    @router.post("/v1/lake/document", summary="an activation's document: its labeled positions in order")
    async def lake_document(self, req: api.DocumentRequest) -> dict[str, Any]:
        return await self.lake.document.remote(req.act_id)

    @router.get("/v1/lake/recipes", summary="the explanations' recipes (hash, AV, AR, rows, mean mse, settings)")
    async def lake_recipes(self) -> dict[str, Any]:
        return await self.lake.recipes.remote()

    @router.post("/v1/lake/compare", summary="two recipes on their shared activations: paired difference, its "
                 "histogram, the rows that changed most")
    async def lake_compare(self, req: api.LakeCompareRequest) -> dict[str, Any]:
        return await self.lake.compare.remote(req.a, req.b, req.top)

    @router.post("/v1/strip", summary="text -> every token, each readable one explained and scored in one batch")
    async def strip(self, req: api.StripRequest) -> dict[str, Any]:
        sampling = self._sampling(req)
        text = self._text(req.text, "text")
        got = await self._extract(text, [])  # the tokens (the same ids the positions below index)
        tokens = got["tokens"]
        readable = [t["position"] for t in tokens if not t["special"]]
        if not readable:
            raise NLAInputError("text: it has only special tokens, so there is nothing to explain. Fix: send some "
                                "words.")
        positions = readable[: self.limits.max_vectors]
        vectors = (await self._extract(text, positions))["vectors"]  # (n, d)
        results = await self._explain(vectors, sampling)
        for p, v, r in zip(positions, vectors, results):
            r.update(position=p, token=tokens[p]["token"], vector=encode_vector(v, "base64"))
        left = len(readable) - len(positions)
        return {"av": self.info["av"]["id"], "ar": self.info["ar"]["id"] if self.info["ar"] else None,
                "layer": self.info["layer"], "tokens": tokens, "truncated": got["truncated"], "results": results,
                "not_explained": left,
                "note": (f"the first {len(positions)} of {len(readable)} readable tokens are explained: this "
                         f"server explains at most {self.limits.max_vectors} positions a request (limits.max_vectors)"
                         if left else "")}
