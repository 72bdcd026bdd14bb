"""The lake at a glance, aggregated where the data is: row counts, mse histograms per recipe, the recipes, fve_nrm per
run over time, the most common features, recent runs and the progress of running jobs.

Every figure is one GROUP BY (or the Delta log's row counts), so a page asks for kilobytes however large the lake
is. `summary` is the part that changes only when the labeled tables change (callers may cache it by table
version); `runs` and `progress` read the small runs and shards ledgers and are cheap to poll. Nothing here writes.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from nla.errors import NLAQueryError
from nla.lake.browse import OPTIONAL, optional_columns
from nla.lake.store import now
from nla.schemas import ACTIVATIONS, EXPLANATIONS, RUNS, SHARDS

if TYPE_CHECKING:
    from nla.lake.query import LakeQuery

E, R, S = EXPLANATIONS.col, RUNS.col, SHARDS.col
HIST_BINS, HIST_MAX = 40, 2.0  # mse bins of 0.05 over 0..2; the last bin also holds mse > 2 (worse than orthogonal)
TOP_FEATURES = 20
TOP_VALUES = 50  # flags and sources listed (with their counts)
RECENT_RUNS = 20
RUN_HISTORY = 500  # runs the fve_nrm chart reaches back over
# the counts a job records while it runs (nla.labeling.progress) that mean something went wrong
ERROR_COUNTS = ("shards_failed", "shards_empty", "shards_to_retry", "bad_documents", "explanations_error")
# A running row can outlive its driver (SIGKILL, an out-of-memory kill, a lost node: nothing is left to record the
# end). No commit for this long, and for 5 times the run's own time per shard, is shown as "quiet", not as an ETA.
QUIET_S, QUIET_SHARDS = 1800.0, 5.0


def summary(q: LakeQuery) -> dict[str, Any]:
    """Counts per table, the mse histogram per recipe, the recipes, the most common features, and the flags and
    sources with their counts when the lake has those columns."""
    have = q.tables
    out: dict[str, Any] = {"tables": [{"name": t.name, "rows": t.rows, "version": t.version}
                                      for t in q.lake.infos()],
                           "histogram": {"edges": [i * HIST_MAX / HIST_BINS for i in range(HIST_BINS + 1)],
                                         "recipes": {}},
                           "recipes": [], "features": []}
    if EXPLANATIONS.name not in have:
        return out
    width = HIST_MAX / HIST_BINS
    for r in q.run(f"SELECT {E.recipe} AS recipe, least(floor({E.mse} / {width}), {HIST_BINS - 1})::INTEGER AS bin, "
                   f"count(*) AS n FROM explanations WHERE {E.mse} IS NOT NULL GROUP BY ALL ORDER BY ALL",
                   limit=None, checked=True).to_pylist():
        out["histogram"]["recipes"].setdefault(r["recipe"], [0] * HIST_BINS)[r["bin"]] = r["n"]
    out["recipes"] = recipes(q)
    if "features" in q.views():
        try:  # the one figure that reads every explanation's text: past the timeout, the rest still answers
            out["features"] = q.run(f"SELECT feature, count(*) AS n, avg({E.mse}) AS mean_mse FROM features "
                                    f"GROUP BY feature ORDER BY n DESC, feature LIMIT {TOP_FEATURES}", limit=None,
                                    checked=True).to_pylist()
        except NLAQueryError as e:
            out["features_error"] = str(e)
    columns = optional_columns(q)
    if columns["flags"]:
        out["flags"] = q.run(f"SELECT flag, count(*) AS n FROM (SELECT unnest({OPTIONAL['flags'][1]}) AS flag FROM "
                             f"explanations) GROUP BY flag ORDER BY n DESC, flag LIMIT {TOP_VALUES}", limit=None,
                             checked=True).to_pylist()
    if columns["source"] and ACTIVATIONS.name in have:
        out["sources"] = q.run(f"SELECT {OPTIONAL['source'][1]} AS source, count(*) AS n FROM activations GROUP BY "
                               f"ALL ORDER BY n DESC, source LIMIT {TOP_VALUES}", limit=None, checked=True).to_pylist()
    return out


def recipes(q: LakeQuery) -> list[dict[str, Any]]:
    """Each explanations recipe: its hash, AV and AR, rows, scored rows, mean mse, and what made it (the recipe's
    fields from the runs that wrote it, when recorded)."""
    if EXPLANATIONS.name not in q.tables:
        return []
    rows = q.run(f"SELECT {E.recipe} AS recipe, {E.av} AS av, {E.ar} AS ar, count(*) AS rows, count({E.mse}) AS "
                 f"scored, avg({E.mse}) AS mean_mse, min({E.created_at}) AS first_at FROM explanations GROUP BY ALL "
                 "ORDER BY first_at, recipe", limit=None, checked=True).to_pylist()
    fields: dict[str, Any] = {}
    if RUNS.name in q.tables:
        for r in q.run(f"SELECT {R.recipes} FROM runs WHERE {R.recipes} IS NOT NULL ORDER BY {R.started_at} LIMIT "
                       f"{RUN_HISTORY}", limit=None, checked=True).to_pylist():
            made = _json(r[R.recipes]).get(EXPLANATIONS.name) or {}
            if made.get("hash"):
                fields[made["hash"]] = made.get("fields", {})
    for r in rows:
        r["fields"] = fields.get(r["recipe"])
    return rows


def runs(q: LakeQuery, *, limit: int = RUN_HISTORY) -> list[dict[str, Any]]:
    """The latest runs, newest first: id, job, status, times, and their figures (counts and throughput merged)."""
    if RUNS.name not in q.tables:
        return []
    got = q.run(f"SELECT {R.run_id}, {R.job}, {R.status}, {R.started_at}, {R.finished_at}, {R.counts}, "
                f"{R.throughput}, {R.recipes} FROM runs ORDER BY {R.started_at} DESC, {R.run_id} LIMIT {int(limit)}",
                limit=None, checked=True).to_pylist()
    out = []
    for r in got:
        recipe = _json(r.pop(R.recipes)).get(EXPLANATIONS.name) or {}
        out.append({**r, R.counts: _json(r[R.counts]), R.throughput: _json(r[R.throughput]),
                    "recipe": recipe.get("hash")})
    return out


def progress(q: LakeQuery, history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each running job: shards committed of its total, rows committed, rate, ETA and its error counts so far, from
    the runs row (the total and counts the job records) and the shards ledger (what it committed, and when); with
    `quiet_s` (seconds since its last commit, else its start) and `stalled` (quiet past QUIET_S and 5 shards' time:
    its driver may be gone; no ETA then)."""
    running = [r for r in (history if history is not None else runs(q)) if r[R.status] == "running"]
    if not running:
        return []
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if SHARDS.name in q.tables:
        ids = ", ".join("'" + r[R.run_id].replace("'", "''") + "'" for r in running)
        for d in q.run(f"SELECT {S.run_id} AS run_id, {S.table_name} AS t, count(DISTINCT {S.shard}) AS units, "
                       f"sum({S.rows}) AS rows, max({S.committed_at}) AS last_at FROM shards WHERE {S.run_id} IN "
                       f"({ids}) GROUP BY ALL", limit=None, checked=True).to_pylist():
            done[(d["run_id"], d["t"])] = d
    t_now = now()
    out = []
    for r in running:
        mine = [v for (run, _), v in done.items() if run == r[R.run_id]]
        committed = min((v["units"] for v in mine), default=0)  # a unit is done once every table it writes has it
        elapsed = max((t_now - r[R.started_at]).total_seconds(), 1e-9) if r[R.started_at] else None
        total = r[R.counts].get("shards_total")
        rate = committed / elapsed if elapsed and committed else None
        last = max((v["last_at"] for v in mine), default=None)
        alive_at = last or r[R.started_at]  # its last sign of life: a commit, else its start
        quiet = (t_now - alive_at).total_seconds() if alive_at else None
        stalled = quiet is not None and quiet > max(QUIET_S, QUIET_SHARDS / rate if rate else 0.0)
        out.append({"run_id": r[R.run_id], "job": r[R.job], "started_at": r[R.started_at],
                    "shards_total": total, "shards_committed": committed,
                    "rows_committed": sum(int(v["rows"] or 0) for v in mine),
                    "shards_per_s": rate, "elapsed_s": elapsed,
                    "eta_s": (total - committed) / rate if rate and total is not None and not stalled else None,
                    "last_commit_at": last, "quiet_s": quiet, "stalled": stalled,
                    "errors": {k: r[R.counts].get(k, 0) for k in ERROR_COUNTS}})
    return out


def fve_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished runs that scored activations, oldest first: when, fve_nrm, mean mse, the recipe."""
    points = [{"run_id": r[R.run_id], "job": r[R.job], "at": r[R.finished_at] or r[R.started_at],
               "fve_nrm": r[R.throughput].get("fve_nrm"), "mean_mse": r[R.throughput].get("mean_mse"),
               "recipe": r["recipe"]} for r in history if _finite(r[R.throughput].get("fve_nrm"))]
    return sorted(points, key=lambda p: p["at"])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
