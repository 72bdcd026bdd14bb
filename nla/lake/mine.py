"""Hard-example mining: a filter over labeled activations -> a versioned training-set table for retraining.

The filter is a SQL boolean expression over the `labels` columns plus `vector` (e.g. "mse > 0.8 AND status = 'ok'"),
checked to be one expression (no statements smuggled in). Rows stream from DuckDB into training_sets/<name>; each
mining run is a new Delta version of that table, with provenance on every row and in the runs ledger.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from nla.errors import NLAInputError, NLAQueryError
from nla.lake.query import LakeQuery
from nla.lake.runs import new_run_id, record_run
from nla.lake.store import Lake, now
from nla.schemas import ACTIVATIONS, EXPLANATIONS, TRAINING_SET

E, A, T = EXPLANATIONS.col, ACTIVATIONS.col, TRAINING_SET.col
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
ORDERS = {"mse_desc": f"{E.mse} DESC NULLS LAST", "mse_asc": f"{E.mse} ASC NULLS LAST", "none": ""}


@dataclass
class MineResult:
    table: str
    version: int
    rows: int
    run_id: str


def training_table(name: str) -> str:
    if not _NAME.match(name or ""):
        raise NLAInputError(f"--name {name!r}: not a training-set name. Fix: use letters, digits, '_', '-', '.' "
                            "(up to 64), e.g. hard_v1.")
    return f"{TRAINING_SET.name}/{name}"


def mine(lake: Lake, *, where: str, name: str, limit: int | None = None, order: str = "mse_desc",
         timeout_s: float = 3600.0, allow_empty: bool = True) -> MineResult:
    """Write the rows of `labels` matching `where` (with their vectors) to training_sets/<name>. With
    allow_empty=False, a `where` that matches nothing writes nothing and is refused (NLAInputError)."""
    table = training_table(name)
    if order not in ORDERS:
        raise NLAInputError(f"--order {order!r}: choose one of {sorted(ORDERS)}.")
    if limit is not None and limit < 1:
        raise NLAInputError(f"--limit {limit}: must be >= 1.")
    with LakeQuery(lake, timeout_s=timeout_s) as q:
        return _mine(q, lake, where=where, name=name, table=table, limit=limit, order=order, allow_empty=allow_empty)


def _mine(q: LakeQuery, lake: Lake, *, where: str, name: str, table: str, limit: int | None,
          order: str, allow_empty: bool) -> MineResult:
    if "labels" not in q.views():
        raise NLAQueryError(f"lake {lake.root} has no labeled activations (explanations + activations). "
                            "Fix: run `nla label` first.")
    run_id = new_run_id("mine")
    src = (f"SELECT l.*, a.{A.vector} FROM labels l JOIN activations a USING ({A.act_id})")
    sql = (f"SELECT {E.act_id}, {A.vector}, {E.explanation}, {E.av}, {E.ar}, {E.sample}, {E.mse}, {E.cos}, "
           f"{A.context}, {E.run_id} AS {T.source_run_id}, $run AS {T.mined_by}, $where AS {T.query} "
           f"FROM ({src}) m WHERE ({where})"
           + (f" ORDER BY {ORDERS[order]}" if ORDERS[order] else "") + (f" LIMIT {int(limit)}" if limit else ""))
    q.check(f"SELECT * FROM labels WHERE {where}")  # one boolean expression, nothing smuggled after it
    params = {"run": run_id, "where": where}
    q.run(f"SELECT * FROM ({sql}) LIMIT 0", params, checked=True)  # bind it (columns, types) before writing anything
    started = now()
    config = {"where": where, "name": name, "limit": limit, "order": order, "lake": lake.root}
    batches = q.stream(sql, params, checked=True)
    if not allow_empty:
        first = next((b for b in batches if b.num_rows), None)  # streamed: the rest stay unread until written
        if first is None:
            batches.close()
            raise NLAInputError(f"--where {where!r}: no labeled activation matches it, so nothing was written "
                                f"({table} is unchanged). Fix: loosen it; `nla query \"SELECT count(*) FROM labels "
                                f"WHERE ...\"` counts the matches.")
        batches = itertools.chain([first], batches)
    version = lake.overwrite(TRAINING_SET, batches, name=table, run_id=run_id, d=q.d, extra_metadata={"where": where})
    rows = lake.table(table).to_pyarrow_dataset().count_rows()
    record_run(lake, run_id, job="mine", config=config, status="ok", started_at=started, finished_at=now(),
               counts={"rows_out": rows, "table": table, "version": version})
    return MineResult(table=table, version=version, rows=rows, run_id=run_id)
