"""Read-only SQL over the lake with DuckDB: views, feature split, search macros, a sandbox and a timeout.

Each Delta table is opened with deltalake and registered in an in-memory DuckDB as a pyarrow dataset, so DuckDB's
projection and filter pushdown reach the parquet files (a query that does not select `vector` never reads it).
DuckDB's own delta extension was not used: offline it exists only for older DuckDB releases, and it reads files
itself, which the sandbox forbids (external access off). Users get exactly one SELECT per call; files, extensions,
settings and writes are refused. This module does not write tables.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from nla.errors import NLAInputError, NLAQueryError
from nla.lake.compare import compare_macro
from nla.lake.search import SearchResult, Searcher, table_dataset
from nla.lake.store import Lake
from nla.quality.flags import FLAGS
from nla.schemas import ACTIVATIONS, EXPLANATIONS

MAX_SQL_CHARS = 20_000
DEFAULT_TIMEOUT_S = 30.0
PARSE_FIX = ("write one read-only SELECT in DuckDB's dialect (duckdb.org/docs/sql/introduction); query('...') runs "
             "only a SELECT too.")

E, A = EXPLANATIONS.col, ACTIVATIONS.col
# Explanations joined with where their activation came from (no vector: select it from activations when needed).
LABELS_SQL = (f"SELECT e.*, a.{A.doc_id}, a.{A.position}, a.{A.token}, a.{A.context}, a.{A.layer}, a.{A.base_model}, "
              f"a.{A.source}, a.{A.label}, a.{A.meta}, a.{A.norm} FROM explanations e LEFT JOIN activations a USING "
              f"({E.act_id})")
# The quality flags summed up: one row per (recipe, av, ar, source), a count per flag, and the mean mse of the clean
# and the flagged explanations.
QUALITY_SQL = ("SELECT recipe, av, ar, source, count(*) AS explanations, count(*) FILTER (WHERE len(flags) > 0) AS "
               "flagged, round(count(*) FILTER (WHERE len(flags) > 0) / count(*), 4) AS share_flagged, "
               + ", ".join(f"count(*) FILTER (WHERE list_contains(flags, '{f}')) AS {f}" for f in FLAGS)
               + ", avg(mse) FILTER (WHERE len(flags) = 0) AS mse_clean, avg(mse) FILTER (WHERE len(flags) > 0) AS "
               "mse_flagged FROM labels GROUP BY ALL ORDER BY ALL")
# The release's explanations are 2-3 features, most important first, separated by blank lines: one row per feature.
FEATURES_SQL = (f"SELECT {E.act_id}, {E.av}, {E.ar}, {E.sample}, {E.mse}, {E.cos}, trim(u.feature) AS feature, "
                f"u.rank::INTEGER AS rank FROM explanations, "
                f"UNNEST(regexp_split_to_array({E.explanation}, '\\n\\s*\\n')) WITH ORDINALITY AS u(feature, rank) "
                f"WHERE {E.status} = 'ok' AND trim(u.feature) <> ''")
MACROS = (
    # keyword or regex search over explanations (case-insensitive): SELECT * FROM search_explanations('rain|storm')
    "CREATE MACRO search_explanations(pattern) AS TABLE "
    f"SELECT * FROM labels WHERE regexp_matches({E.explanation}, pattern, 'i')",
    # features matching a pattern: SELECT * FROM search_features('weather')
    "CREATE MACRO search_features(pattern) AS TABLE SELECT * FROM features WHERE regexp_matches(feature, pattern, 'i')",
)


# Top-k activations by cosine to a query vector, through the index (exact := true scans every row):
# SELECT * FROM nearest([..]::FLOAT[d], 10). `method` says how each answer was found (search.SearchResult).
NEAREST_MACRO = ("CREATE MACRO nearest(q, k, exact := false) AS TABLE SELECT r.act_id, r.similarity, r.method "
                 "FROM (SELECT unnest(nla_nearest(q::FLOAT[], k::INTEGER, exact::BOOLEAN)) AS r)")
NEAREST_TYPE = f"STRUCT({A.act_id} VARCHAR, similarity FLOAT, method VARCHAR)[]"


def view_name(table: str) -> str:
    """The DuckDB view of a lake table: training_sets/hard_v1 -> training_sets_hard_v1."""
    return table.replace("/", "_")


class LakeQuery:
    """An in-memory DuckDB with read-only views over the lake's tables (optionally pinned to versions)."""

    def __init__(self, lake: Lake, *, versions: dict[str, int] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_limit: str | None = None) -> None:
        """versions pins tables to Delta versions; memory_limit caps DuckDB's memory (e.g. "1GB"; a shared server
        sets it so one query cannot take the replica's memory), None = DuckDB's default (80% of RAM)."""
        import duckdb

        self.lake, self.timeout_s = lake, timeout_s
        # no extension is installed or loaded behind a query's back (external access off blocks it too)
        self.con = duckdb.connect(":memory:", config={"python_enable_replacements": False,
                                                      "autoinstall_known_extensions": False,
                                                      "autoload_known_extensions": False})
        self.tables: dict[str, int] = {}
        self.datasets: dict[str, Any] = {}  # the registered pyarrow datasets, by view name
        self.d: int | None = None
        self.searcher: Searcher | None = None
        self.last_search: SearchResult | None = None  # how the latest nearest() was answered
        self._udf_error: Exception | None = None
        for name in lake.names():
            view = view_name(name)
            # the declared schema restores fixed-size vectors (Delta stores them as plain lists)
            self.datasets[view], self.tables[view] = table_dataset(lake, name, version=(versions or {}).get(name))
            self.con.register(view, self.datasets[view])
            if name == ACTIVATIONS.name:
                self.d = self.datasets[view].schema.field(A.vector).type.list_size
                self.searcher = Searcher(lake, self.datasets[view])
        for missing in set(versions or {}) - set(lake.names()):
            raise NLAQueryError(f"--at {missing}: no such table in {lake.root}. Fix: see `nla tables`.")
        if {"explanations", "activations"} <= set(self.tables):
            self.con.execute(f"CREATE VIEW labels AS {LABELS_SQL}")
            self.con.execute(f"CREATE VIEW features AS {FEATURES_SQL}")
            self.con.execute(f"CREATE VIEW quality AS {QUALITY_SQL}")
            for m in (*MACROS, compare_macro()):
                self.con.execute(m)
        if self.d:
            self.con.create_function("nla_nearest", self._nearest_udf, ["FLOAT[]", "INTEGER", "BOOLEAN"],
                                     NEAREST_TYPE, side_effects=True)
            self.con.execute(NEAREST_MACRO)
        # The sandbox: no files, no extensions, no settings changes from here on.
        if memory_limit:
            self.con.execute("SET memory_limit = ?", [memory_limit])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    # ---- the user path -----------------------------------------------------------------------------------------------
    def check(self, sql: str) -> None:
        """Refuse anything but one read-only SELECT."""
        import duckdb

        if not isinstance(sql, str) or not sql.strip():
            raise NLAQueryError("empty query. Fix: pass one SELECT, e.g. \"SELECT count(*) FROM explanations\".")
        if len(sql) > MAX_SQL_CHARS:
            raise NLAQueryError(f"query of {len(sql)} characters is over the {MAX_SQL_CHARS} limit. Fix: shorten it.")
        try:
            stmts = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise NLAQueryError(f"SQL does not parse: {_first_line(e)}. Fix: {PARSE_FIX}") from e
        if len(stmts) != 1:
            raise NLAQueryError(f"{len(stmts)} statements given; the lake answers exactly one read-only SELECT per "
                                "query. Fix: send them one at a time.")
        if stmts[0].type != duckdb.StatementType.SELECT:
            kind = str(stmts[0].type).split(".")[-1]
            raise NLAQueryError(f"{kind} statements are refused: the lake is read-only here (no writes, ATTACH, COPY, "
                                "INSTALL/LOAD, PRAGMA or SET). Fix: use a SELECT; jobs write the tables.")

    def stream(self, sql: str, params: Any = None, *, batch_rows: int = 65_536,
               checked: bool = False) -> Iterator[pa.RecordBatch]:
        """Run a SELECT and yield its result as Arrow batches (bounded memory); the timeout covers the whole read."""
        if not checked:
            self.check(sql)
        try:
            with self._timeout():
                reader = self.con.sql(sql, params=params).to_arrow_reader(batch_rows)
                try:
                    yield from reader
                finally:
                    reader.close()
        except Exception as e:
            raise self._explain(e) from e

    def run(self, sql: str, params: Any = None, *, limit: int | None = 10_000, checked: bool = False,
            max_bytes: int | None = None) -> pa.Table:
        """Run a SELECT and return at most `limit` rows as an Arrow table (within the timeout); a result over
        `max_bytes` is refused."""
        if not checked:
            self.check(sql)
        try:
            with self._timeout():
                rel = self.con.sql(sql, params=params)
                if limit is None:
                    return rel.to_arrow_table()
                # with a byte cap, small batches: the cap is checked before a huge result is all in memory
                reader = rel.to_arrow_reader(min(limit, 16 if max_bytes is not None else 65_536) or 1)
                batches, n, size = [], 0, 0
                try:
                    for b in reader:
                        batches.append(b.slice(0, limit - n))
                        n += batches[-1].num_rows
                        size += batches[-1].nbytes
                        if max_bytes is not None and size > max_bytes:
                            raise NLAQueryError(f"the result is over {max_bytes:,} bytes after {n} rows. Fix: select "
                                                "fewer or shorter columns (e.g. left(explanation, 200)), or lower "
                                                "the limit.")
                        if n >= limit:
                            break
                finally:
                    reader.close()  # an unfinished stream left open aborts the process at exit
                return pa.Table.from_batches(batches, schema=reader.schema)
        except Exception as e:
            raise self._explain(e) from e

    def close(self) -> None:
        self.con.close()
        if self.searcher is not None:
            self.searcher.close()

    def __enter__(self) -> LakeQuery:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- search ------------------------------------------------------------------------------------------------------
    def check_width(self, d: int, what: str) -> None:
        """Refuse a search by vectors of width d (`what` names where they come from) before any is computed: the
        lake needs activations of that width."""
        if self.d is None:
            raise NLAQueryError(f"lake {self.lake.root} has no activations table to search. Fix: run `nla label` "
                                "first.")
        if d != self.d:
            raise NLAInputError(f"{what} has d={d} but the activations table stores d={self.d}. Fix: use the AR (or "
                                "base model) that matches this lake's activations.")

    def search(self, vector: Any, k: int = 10, *, exact: bool = False) -> SearchResult:
        """The k activations nearest by cosine (through the index unless exact); last_search records how."""
        if self.searcher is None:
            self.check_width(0, "query vector")  # raises: no activations table
        self.last_search = self.searcher.nearest(vector, int(k), exact=exact)  # type: ignore[union-attr]
        return self.last_search

    def nearest(self, vector: Any, k: int = 10, *, exact: bool = False) -> pa.Table:
        """Top-k activations by cosine to `vector`, each joined with its explanations (best mse first); the
        `method` column says whether the index answered (search.SearchResult.method)."""
        hits = self.search(vector, k, exact=exact).hits
        top = pa.table({A.act_id: [h[0] for h in hits], "similarity": pa.array([h[1] for h in hits], pa.float32()),
                        "method": [self.last_search.method] * len(hits)})  # type: ignore[union-attr]
        self.con.register("_top_hits", top)
        try:
            if "explanations" not in self.tables:
                return top
            # filter both sides to the k ids before joining: hash tables stay k rows, whatever the lake's size
            ids = ", ".join(f"'{h[0]}'" for h in hits) or "NULL"
            sql = (f"SELECT n.{A.act_id}, n.similarity, n.method, e.{E.explanation}, e.{E.mse}, e.{E.cos}, "
                   f"e.{E.sample}, a.{A.context} FROM _top_hits n "
                   f"LEFT JOIN (SELECT * FROM explanations WHERE {E.act_id} IN ({ids})) e USING ({A.act_id}) "
                   f"LEFT JOIN (SELECT {A.act_id}, {A.context} FROM activations WHERE {A.act_id} IN ({ids})) a "
                   f"USING ({A.act_id}) ORDER BY n.similarity DESC, e.{E.mse} ASC NULLS LAST")
            return self.run(sql, checked=True, limit=None)
        finally:
            self.con.unregister("_top_hits")

    def keyword(self, pattern: str, *, limit: int = 20) -> pa.Table:
        """Explanations matching a case-insensitive regex (a plain word works as a keyword)."""
        import re

        try:
            re.compile(pattern)
        except re.error as e:
            raise NLAInputError(f"pattern {pattern!r} is not a valid regex ({e}). Fix: escape special characters.")
        if not {"explanations", "activations"} <= set(self.tables):  # the macro reads both
            raise NLAQueryError(f"lake {self.lake.root} has no explanations table to search. Fix: run `nla label` "
                                "first.")
        return self.run("SELECT * FROM search_explanations($p) ORDER BY mse ASC NULLS LAST LIMIT $n",
                        {"p": pattern, "n": int(limit)}, checked=True, limit=None)

    def _nearest_udf(self, q: list[float] | None, k: int | None, exact: bool | None) -> list[dict[str, Any]]:
        """The `nearest` macro's body: DuckDB hands over the query vector, gets the hits back."""
        try:
            r = self.search(q if q is not None else [], int(k or 0), exact=bool(exact))
        except Exception as e:
            self._udf_error = e  # _explain returns it as it was (DuckDB wraps it in its own words)
            raise
        return [{A.act_id: a, "similarity": s, "method": r.method} for a, s in r.hits]

    # ---- helpers -----------------------------------------------------------------------------------------------------
    def _timeout(self) -> Any:
        query = self

        class _Timer:
            def __enter__(self) -> None:
                self.timer = threading.Timer(query.timeout_s, query.con.interrupt)
                self.timer.start()

            def __exit__(self, *exc: Any) -> None:
                self.timer.cancel()

        return _Timer()

    def _explain(self, e: Exception) -> Exception:
        import duckdb

        msg = _first_line(e)
        if self._udf_error is not None and isinstance(e, duckdb.Error):
            udf_error, self._udf_error = self._udf_error, None
            return udf_error
        if isinstance(e, duckdb.InterruptException):
            return NLAQueryError(f"query cut off after {self.timeout_s:.0f}s. Fix: add a WHERE/LIMIT, or select "
                                 "fewer columns (vectors are large).")
        if isinstance(e, duckdb.OutOfMemoryException):
            return NLAQueryError(f"query ran out of its memory limit ({msg}). Fix: aggregate or filter more, or "
                                 "select fewer or shorter columns.")
        if isinstance(e, duckdb.PermissionException):
            return NLAQueryError(f"refused: {msg}. The query path cannot read or write files. Fix: query the lake's "
                                 "tables only.")
        if isinstance(e, duckdb.CatalogException) and "Function with name" in msg:
            hint = next((ln.strip() for ln in str(e).splitlines() if ln.strip().startswith("Did you mean")), "")
            text = msg.removeprefix("Catalog Error: ").rstrip(".!") + "." + (f" {hint}" if hint else "")
            return NLAQueryError(f"{text} Fix: check the "
                                 "function's name and kind (a table function goes after FROM). nla adds "
                                 "search_explanations(pattern), search_features(pattern), nearest(query, k) and "
                                 "compare(a, b); the rest are DuckDB's (duckdb.org/docs/sql/functions/overview).")
        if isinstance(e, duckdb.CatalogException):
            known = ", ".join(sorted(self.tables) + (["labels", "features", "quality"] if "labels" in self.views() else []))
            return NLAQueryError(f"{msg}. Tables here: {known or 'none'}. Fix: check the name (`nla tables`).")
        if isinstance(e, duckdb.BinderException):
            return NLAQueryError(f"{msg}. Fix: check column names (`nla tables` prints each table's schema).")
        if isinstance(e, duckdb.ParserException):  # e.g. inside query('...'), which DuckDB parses at run time
            return NLAQueryError(f"SQL does not parse: {msg}. Fix: {PARSE_FIX}")
        if isinstance(e, duckdb.Error):
            return NLAQueryError(f"query failed: {msg}. Fix: correct the SQL (DuckDB's dialect: "
                                 "duckdb.org/docs/sql/introduction); `nla tables` prints each table's schema.")
        return e

    def views(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

