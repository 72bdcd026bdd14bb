"""Browse labels without SQL: typed filters -> one page of labels, its total, and the SQL that produced it.

`LabelFilter` is what the explorer page (and anyone else) asks for: a score range, status, flag, source, recipe, AV,
keyword and feature, a sort and a page. `label_page` turns it into one SELECT with every value inlined as a quoted
literal, runs exactly that text and hands it back, so "open as SQL" shows what ran and `nla query` reproduces it. The
page of explanations is cut first and then joined with its activations (a join of the whole tables would cost 4x at
1M rows). `document` gives the labeled positions of one activation's document. Nothing here writes the lake, and no
query reads vectors.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from nla.errors import NLAInputError
from nla.quality.flags import FLAGS
from nla.schemas import ACTIVATIONS, EXPLANATIONS

if TYPE_CHECKING:
    from nla.lake.query import LakeQuery

E, A = EXPLANATIONS.col, ACTIVATIONS.col
# Columns newer lakes have and older ones do not: filters and badges on them exist only when the table has them.
OPTIONAL = {"flags": (EXPLANATIONS.name, "flags"), "source": (ACTIVATIONS.name, "source")}
SORTS = (E.mse, E.cos, E.n_tokens, E.created_at)
STATUSES = ("ok", "no_tags", "truncated", "error")  # = nla.av.STATUSES, which imports torch (the lake replica does not)
MAX_PAGE_SIZE = 200
FEATURE_SPLIT = "'\\n\\s*\\n'"  # the release's features are separated by blank lines (query.FEATURES_SQL)


@dataclass(frozen=True)
class LabelFilter:
    mse_min: float | None = None  # keep rows with mse >= this
    mse_max: float | None = None  # ... and mse <= this
    status: str | None = None  # ok | no_tags | truncated | error
    flag: str | None = None  # a quality flag the explanation carries (lakes with explanations.flags)
    source: str | None = None  # the activation's source (lakes with activations.source)
    recipe: str | None = None  # an explanations recipe hash, or its first characters
    av: str | None = None  # the AV checkpoint id
    keyword: str | None = None  # a case-insensitive regex over the explanation (a plain word works)
    feature: str | None = None  # one feature of the explanation, exactly (a paragraph, as the features view has it)
    sort: Literal["mse", "cos", "n_tokens", "created_at"] = "mse"
    descending: bool = True
    page: int = 0  # 0-based
    page_size: int = 50


def optional_columns(q: LakeQuery) -> dict[str, bool]:
    """Which optional columns this lake's tables have ({"flags": bool, "source": bool})."""
    return {key: table in q.datasets and col in q.datasets[table].schema.names for key, (table, col) in
            OPTIONAL.items()}


def literal(value: Any) -> str:
    """A SQL literal for a str or a finite number (strings quoted, quotes doubled: DuckDB has no backslash escapes
    in standard strings)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NLAInputError(f"{value!r} is not a string or a finite number. Fix: send one.")
    return repr(value)


def check_filter(f: LabelFilter, columns: dict[str, bool]) -> None:
    """Refuse a filter this lake cannot answer, naming the field and the fix."""
    for name in ("mse_min", "mse_max"):
        v = getattr(f, name)
        if v is not None and not (math.isfinite(v) and 0.0 <= v <= 4.0):
            raise NLAInputError(f"{name}: {v} is outside 0..4, the range of mse = 2(1 - cos). Fix: pick a value in "
                                "0..4 (0 perfect, 2 orthogonal), or leave it out.")
    if f.mse_min is not None and f.mse_max is not None and f.mse_min > f.mse_max:
        raise NLAInputError(f"mse_min {f.mse_min} is above mse_max {f.mse_max}: no row can match. Fix: swap them.")
    if f.status is not None and f.status not in STATUSES:
        raise NLAInputError(f"status: {f.status!r} is not one of {', '.join(STATUSES)}. Fix: pick one of them.")
    if f.flag is not None and f.flag not in FLAGS:
        raise NLAInputError(f"flag: {f.flag!r} is not a quality flag. Fix: pick one of {', '.join(FLAGS)} "
                            "(docs/quality.md says what each means).")
    for key, column in (("flag", "flags"), ("source", "source")):  # filter field -> the optional column it needs
        if getattr(f, key) is not None and not columns[column]:
            table, col = OPTIONAL[column]
            raise NLAInputError(f"{key}: this lake's {table} table has no {col} column, so it cannot be filtered by "
                                f"{key}. Fix: leave {key} out (lakes labeled by a newer nla have it).")
    if f.recipe is not None and not re.fullmatch(r"[0-9a-f]{1,16}", f.recipe):
        raise NLAInputError(f"recipe: {f.recipe!r} is not a recipe hash (hex). Fix: use a hash or its first "
                            "characters, as the overview's recipes list shows them.")
    if f.keyword is not None:
        if not f.keyword.strip():
            raise NLAInputError("keyword is empty. Fix: send a word or a regex, e.g. \"rain|storm\", or leave it out.")
        try:
            re.compile(f.keyword)
        except re.error as e:
            raise NLAInputError(f"keyword: {f.keyword!r} is not a valid regex ({e}). Fix: escape special characters "
                                "(e.g. \\( for a parenthesis).") from e
    if f.feature is not None and not f.feature.strip():
        raise NLAInputError("feature is empty. Fix: pick a feature from the overview's list, or leave it out.")
    if f.sort not in SORTS:
        raise NLAInputError(f"sort: {f.sort!r} is not sortable. Fix: sort by one of {', '.join(SORTS)}.")
    if not 1 <= f.page_size <= MAX_PAGE_SIZE:
        raise NLAInputError(f"page_size: {f.page_size} is outside 1..{MAX_PAGE_SIZE}. Fix: ask for at most "
                            f"{MAX_PAGE_SIZE} rows a page.")
    if f.page < 0:
        raise NLAInputError(f"page: {f.page} is negative. Fix: pages count from 0.")


def where_sql(f: LabelFilter, alias: str = "") -> str:
    """The WHERE clause (without WHERE) over explanations for `f`; 'true' when it filters nothing."""
    c = alias + "." if alias else ""
    parts = []
    if f.mse_min is not None:
        parts.append(f"{c}{E.mse} >= {literal(f.mse_min)}")
    if f.mse_max is not None:
        parts.append(f"{c}{E.mse} <= {literal(f.mse_max)}")
    if f.status is not None:
        parts.append(f"{c}{E.status} = {literal(f.status)}")
    if f.recipe is not None:
        parts.append(f"starts_with({c}{E.recipe}, {literal(f.recipe)})")
    if f.av is not None:
        parts.append(f"{c}{E.av} = {literal(f.av)}")
    if f.flag is not None:
        parts.append(f"list_contains({c}{OPTIONAL['flags'][1]}, {literal(f.flag)})")
    if f.keyword is not None:
        parts.append(f"regexp_matches({c}{E.explanation}, {literal(f.keyword)}, 'i')")
    if f.feature is not None:
        parts.append(f"list_contains(list_transform(regexp_split_to_array({c}{E.explanation}, {FEATURE_SPLIT}), "
                     f"lambda x: trim(x)), {literal(f.feature.strip())})")
    if f.source is not None:
        parts.append(f"{c}{E.act_id} IN (SELECT {A.act_id} FROM activations WHERE {OPTIONAL['source'][1]} = "
                     f"{literal(f.source)})")
    return " AND ".join(parts) or "true"


def order_sql(f: LabelFilter, alias: str) -> str:
    """The sort, then the whole key: pages never overlap or skip a row."""
    c = alias + "."
    key = ", ".join(f"{c}{k}" for k in EXPLANATIONS.key)
    return f"{c}{f.sort} {'DESC' if f.descending else 'ASC'} NULLS LAST, {key}"


def page_sql(f: LabelFilter, columns: dict[str, bool]) -> str:
    """One page of labels for `f`, every value inlined (what the page shows under "open as SQL")."""
    cols = [E.act_id, E.av, E.ar, E.recipe, E.sample, E.status, E.mse, E.cos, E.n_tokens, E.explanation,
            *(["flags"] if columns["flags"] else [])]
    acts = [A.doc_id, A.position, A.token, A.context, *(["source"] if columns["source"] else [])]
    select = ", ".join([*(f"e.{c}" for c in cols), *(f"a.{c}" for c in acts)])
    return (f"SELECT {select}\nFROM (SELECT * FROM explanations e WHERE {where_sql(f, 'e')}\n"
            f"      ORDER BY {order_sql(f, 'e')}\n      LIMIT {f.page_size} OFFSET {f.page * f.page_size}) e\n"
            f"LEFT JOIN activations a USING ({E.act_id})\nORDER BY {order_sql(f, 'e')}")


def label_page(q: LakeQuery, f: LabelFilter) -> dict[str, Any]:
    """{rows, total (rows matching f), page, page_size, sql (the page's query), filter, columns}."""
    need_tables(q)
    columns = optional_columns(q)
    check_filter(f, columns)
    sql = page_sql(f, columns)
    rows = q.run(sql, limit=None).to_pylist()
    total = q.run(f"SELECT count(*) AS n FROM explanations e WHERE {where_sql(f, 'e')}", limit=None,
                  checked=True).column("n")[0].as_py()
    return {"rows": rows, "total": total, "page": f.page, "page_size": f.page_size, "sql": sql,
            "filter": {k: v for k, v in asdict(f).items() if v is not None}, "columns": columns}


def document(q: LakeQuery, act_id: str) -> dict[str, Any]:
    """The document an activation came from: every labeled position of it (same base model and layer) in order,
    each with its best-scored explanation; `selected` is the position of act_id."""
    need_tables(q)
    if not act_id or not re.fullmatch(r"[0-9A-Za-z_\-]{1,128}", act_id):
        raise NLAInputError(f"act_id: {act_id!r} is not an activation id. Fix: take one from the labels table "
                            "(activations.act_id).")
    where = q.run(f"SELECT {A.doc_id}, {A.base_model}, {A.layer}, {A.position} FROM activations "
                  f"WHERE {A.act_id} = {literal(act_id)}", limit=1, checked=True).to_pylist()
    if not where:
        raise NLAInputError(f"act_id {act_id!r} is not in this lake's activations. Fix: pick a row of the labels "
                            "table (the lake may have been replaced since the link was made).")
    w = where[0]
    rows = q.run(f"SELECT a.{A.act_id}, a.{A.position}, a.{A.token}, a.{A.context}, "
                 f"arg_min(e.{E.explanation}, e.{E.mse}) AS explanation, min(e.{E.mse}) AS mse, "
                 f"count(e.{E.act_id}) AS explanations FROM (SELECT * FROM activations WHERE {A.doc_id} = "
                 f"{literal(w[A.doc_id])} AND {A.base_model} = {literal(w[A.base_model])} AND {A.layer} = "
                 f"{int(w[A.layer])}) a LEFT JOIN explanations e USING ({A.act_id}) GROUP BY ALL "
                 f"ORDER BY a.{A.position}", limit=None, checked=True).to_pylist()
    return {"act_id": act_id, "doc_id": w[A.doc_id], "base_model": w[A.base_model], "layer": w[A.layer],
            "selected": w[A.position], "positions": rows}


def need_tables(q: LakeQuery) -> None:
    missing = [t for t in (ACTIVATIONS.name, EXPLANATIONS.name) if t not in q.tables]
    if missing:
        raise NLAInputError(f"lake {q.lake.root} has no {' or '.join(missing)} table yet, so there is nothing to "
                            "browse. Fix: label a corpus first (`nla label input=DIR`, or `nla demo`).")
