"""Compare two labeling recipes on the activations both explained: the paired difference, not two unrelated means.

`compare(a, b)` is also a DuckDB table macro over the lake (nla/lake/query.py registers it): one row per shared
activation with each recipe's mean mse over its samples and b - a. This module resolves what users name a recipe
by (a recipe hash or its prefix, or a run id) and summarises the pairs; it does not label.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nla.errors import NLAInputError
from nla.schemas import EXPLANATIONS, RUNS

if TYPE_CHECKING:
    from nla.lake.query import LakeQuery

E, R = EXPLANATIONS.col, RUNS.col
_HEX = re.compile(r"[0-9a-f]{4,16}")


def compare_macro() -> str:
    """SELECT * FROM compare('3fa2', '9c01'): paired rows of two recipes (hash prefixes), each activation's mean mse
    over its scored samples, diff = b - a (negative: b reconstructs better)."""
    def side(arg: str) -> str:
        return (f"SELECT {E.act_id}, avg({E.mse}) AS mse, arg_min({E.explanation}, {E.mse}) AS explanation "
                f"FROM explanations WHERE starts_with({E.recipe}, {arg}) AND {E.mse} IS NOT NULL GROUP BY {E.act_id}")
    return (f"CREATE MACRO compare(ra, rb) AS TABLE SELECT {E.act_id}, a.mse AS mse_a, b.mse AS mse_b, "
            f"b.mse - a.mse AS diff, a.explanation AS explanation_a, b.explanation AS explanation_b "
            f"FROM ({side('ra')}) a JOIN ({side('rb')}) b USING ({E.act_id})")


def resolve_recipe(q: LakeQuery, key: str) -> str:
    """A recipe hash (or a prefix of at least 4 characters) of explanations, or a run id whose explanations recipe
    is meant."""
    if _HEX.fullmatch(key):
        found = [r[E.recipe] for r in q.run(f"SELECT DISTINCT {E.recipe} FROM explanations WHERE starts_with("
                                            f"{E.recipe}, '{key}')", limit=3).to_pylist()]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NLAInputError(f"recipe {key!r} matches several recipes ({', '.join(found)}). Fix: give more of "
                                "the hash.")
    if "runs" in q.views():
        rows = q.run(f"SELECT {R.recipes} FROM runs WHERE {R.run_id} = $1", [key], limit=1).to_pylist()
        if rows and rows[0][R.recipes]:
            recipe = (json.loads(rows[0][R.recipes]).get(EXPLANATIONS.name) or {}).get("hash")
            if recipe:
                return recipe
            raise NLAInputError(f"run {key!r} wrote no explanations. Fix: name a label run, or a recipe hash.")
    known = q.run(f"SELECT {E.recipe}, count(*) n FROM explanations GROUP BY 1 ORDER BY n DESC", limit=8).to_pylist()
    listed = ", ".join(f"{r[E.recipe]} ({r['n']} rows)" for r in known) or "none"
    raise NLAInputError(f"{key!r} is neither a recipe of this lake's explanations nor a run id. Fix: use one of the "
                        f"recipes ({listed}), or a run id from `nla query \"SELECT run_id, job, recipes FROM runs\"`.")


@dataclass
class Comparison:
    recipe_a: str
    recipe_b: str
    n: int
    mse_a: float
    mse_b: float
    diff: float  # mean of b - a over shared activations
    ci95: float  # half-width of the 95% interval of diff (normal approximation)
    b_better: int  # activations where b's mse is lower
    a_better: int
    changed: list[dict[str, Any]]  # the rows that changed most, by |diff|


def compare(q: LakeQuery, a: str, b: str, *, top: int = 10) -> Comparison:
    ra, rb = resolve_recipe(q, a), resolve_recipe(q, b)
    if ra == rb:
        raise NLAInputError(f"{a!r} and {b!r} are the same recipe ({ra}). Fix: compare two different recipes.")
    s = q.run(f"SELECT count(*) n, avg(mse_a) a, avg(mse_b) b, avg(diff) d, stddev_samp(diff) sd, "
              f"count(*) FILTER (diff < 0) bw, count(*) FILTER (diff > 0) aw FROM compare('{ra}', '{rb}')").to_pylist()[0]
    if not s["n"]:
        raise NLAInputError(f"recipes {ra} and {rb} share no scored activation. Fix: label the same activations with "
                            "both (`nla label --from-activations` with the second AV or sampling), scored by an AR.")
    changed = q.run(f"SELECT * FROM compare('{ra}', '{rb}') ORDER BY abs(diff) DESC, act_id", limit=top).to_pylist()
    ci = 1.96 * (s["sd"] or 0.0) / math.sqrt(s["n"]) if s["n"] > 1 else float("inf")
    return Comparison(ra, rb, s["n"], s["a"], s["b"], s["d"], ci, s["bw"], s["aw"], changed)


def diff_histogram(q: LakeQuery, ra: str, rb: str, *, bins: int = 40, span: float = 2.0) -> dict[str, Any]:
    """The paired differences b - a of two resolved recipes in `bins` equal bins over [-span, span] (one aggregate in
    DuckDB, counts only); the end bins also hold the rare differences beyond span (mse runs 0..4)."""
    width = 2 * span / bins
    counts = [0] * bins
    for r in q.run(f"SELECT greatest(least(floor((diff + {span!r}) / {width!r}), {bins - 1}), 0)::INTEGER AS bin, "
                   f"count(*) AS n FROM compare('{ra}', '{rb}') GROUP BY ALL", checked=True, limit=None).to_pylist():
        counts[r["bin"]] = r["n"]
    return {"edges": [-span + i * width for i in range(bins + 1)], "counts": counts}
