"""The read-only lake deployment: SQL, cosine nearest neighbours, keyword search and the explorer page's views
(overview, progress, a page of labels, a document, recipes, a comparison) over the Delta tables.

It holds one nla.lake.query.LakeQuery: an in-memory DuckDB whose sandbox refuses anything but one SELECT (no writes,
ATTACH, COPY, INSTALL/LOAD, PRAGMA, SET or file readers; external access off) and cuts queries off at a timeout.
New table versions written by jobs are picked up at most every `refresh_s`. The overview's aggregates are kept until
a table changes, and so are the latest comparisons. It never writes the lake, and it does not turn text into vectors (the AR deployment does).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict
from typing import Any

from nla.lake import browse, overview
from nla.lake.compare import compare, diff_histogram
from nla.lake.query import LakeQuery, view_name
from nla.lake.store import Lake
from nla.serve.codec import jsonable

COMPARISONS_KEPT = 32  # comparisons answered again without a query until a table changes (a shared link, reloads)


class LakeReader:
    def __init__(self, root: str, *, timeout_s: float, refresh_s: float, memory_limit: str | None = None,
                 max_bytes: int | None = None, storage_options: dict[str, str] | None = None) -> None:
        self.lake = Lake(root or None, storage_options=storage_options)
        self.timeout_s, self.refresh_s, self.memory_limit, self.max_bytes = timeout_s, refresh_s, memory_limit, max_bytes
        self.lock = threading.Lock()  # one DuckDB connection: one caller at a time
        self.q = self._open()
        self.checked = time.monotonic()
        self.summary: tuple[Any, dict[str, Any]] | None = None  # (table versions, overview.summary of them)
        self.compared: dict[tuple, dict[str, Any]] = {}  # (table versions, a, b, top) -> the comparison

    def _open(self) -> LakeQuery:
        return LakeQuery(self.lake, timeout_s=self.timeout_s, memory_limit=self.memory_limit)

    def _fresh(self) -> LakeQuery:
        """The query object, reopened when a table got a new version (checked at most every refresh_s)."""
        if time.monotonic() - self.checked >= self.refresh_s:
            self.checked = time.monotonic()
            now = {view_name(n): self.lake.table(n).version() for n in self.lake.names()}
            if now != self.q.tables:
                self.q.close()
                self.q = self._open()
        return self.q

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self.lock:
            return fn(self._fresh(), *args)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self._locked, fn, *args)

    async def info(self) -> dict[str, Any]:
        """The lake root, its tables with their versions, and the activations' d."""
        return await self._call(lambda q: {"root": self.lake.root, "tables": dict(q.tables), "d": q.d})

    async def query(self, sql: str, limit: int) -> dict[str, Any]:
        """At most `limit` rows of one read-only SELECT; `truncated` says whether more exist."""
        def run(q: LakeQuery) -> dict[str, Any]:
            t = q.run(sql, limit=limit + 1, max_bytes=self.max_bytes)
            rows = t.slice(0, limit).to_pylist()
            return {"columns": t.column_names, "rows": jsonable(rows), "truncated": t.num_rows > limit}

        return await self._call(run)

    async def nearest(self, vector: Any, k: int, exact: bool = False) -> dict[str, Any]:
        """{results: the k activations nearest by cosine, each with its explanations (best mse first), method: how
        they were found (index | index+scan | exact), indexed_rows, scanned_rows, index_version}."""
        def run(q: LakeQuery) -> dict[str, Any]:
            rows = jsonable(q.nearest(vector, k, exact=exact).to_pylist())
            r = q.last_search
            return {"results": rows, "method": r.method, "indexed_rows": r.indexed_rows,
                    "scanned_rows": r.scanned_rows, "index_version": r.index_version}

        return await self._call(run)

    async def keyword(self, pattern: str, k: int) -> list[dict[str, Any]]:
        """Explanations matching a case-insensitive regex, best mse first."""
        return await self._call(lambda q: jsonable(q.keyword(pattern, limit=k).to_pylist()))

    # ---- the explorer ------------------------------------------------------------------------------------------------
    async def overview(self) -> dict[str, Any]:
        """Counts, histograms, recipes and features (cached per table versions), recent runs, fve_nrm per run,
        running jobs' progress, and which optional columns the lake has."""
        def run(q: LakeQuery) -> dict[str, Any]:
            key = tuple(sorted(q.tables.items()))
            if self.summary is None or self.summary[0] != key:
                summary = overview.summary(q)
                self.summary = (key, summary) if "features_error" not in summary else None  # a timeout: try again
            else:
                summary = self.summary[1]
            history = overview.runs(q)
            return jsonable({**summary, "runs": history[:overview.RECENT_RUNS],
                             "fve": overview.fve_history(history), "progress": overview.progress(q, history),
                             "columns": browse.optional_columns(q)})

        return await self._call(run)

    async def progress(self) -> dict[str, Any]:
        """What the page polls while a job runs: its progress and the recent runs (small tables only)."""
        def run(q: LakeQuery) -> dict[str, Any]:
            history = overview.runs(q, limit=overview.RECENT_RUNS)
            return jsonable({"progress": overview.progress(q, history), "runs": history})

        return await self._call(run)

    async def labels(self, f: browse.LabelFilter) -> dict[str, Any]:
        return await self._call(lambda q: jsonable(browse.label_page(q, f)))

    async def document(self, act_id: str) -> dict[str, Any]:
        return await self._call(lambda q: jsonable(browse.document(q, act_id)))

    async def recipes(self) -> dict[str, Any]:
        return await self._call(lambda q: jsonable({"recipes": overview.recipes(q),
                                                    "columns": browse.optional_columns(q)}))

    async def compare(self, a: str, b: str, top: int) -> dict[str, Any]:
        """The paired comparison of two recipes (nla.lake.compare), the histogram of b - a, and both recipes."""
        def run(q: LakeQuery) -> dict[str, Any]:
            key = (tuple(sorted(q.tables.items())), a, b, top)
            if key not in self.compared:
                browse.need_tables(q)
                c = compare(q, a, b, top=top)
                described = {r["recipe"]: r for r in overview.recipes(q)}
                if len(self.compared) >= COMPARISONS_KEPT or any(k[0] != key[0] for k in self.compared):
                    self.compared.clear()
                self.compared[key] = jsonable({**asdict(c), "histogram": diff_histogram(q, c.recipe_a, c.recipe_b),
                                               "a": described.get(c.recipe_a), "b": described.get(c.recipe_b)})
            return self.compared[key]

        return await self._call(run)
