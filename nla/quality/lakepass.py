"""The lake-wide flags, set after a labeling run's commits: `template` and `low_norm`.

- **template**: a text that explains many activations which are as unrelated to each other as random ones. Rows are
  grouped by TEMPLATE_KEY_SQL (the same text, ignoring case, digits and punctuation) within one recipe. For a group
  of n >= `template_min_vectors` distinct activations, with u the activations scaled to unit length,
  spread = (1 - |mean_group u|^2) / ((1 - 1/n) (1 - |mean_all u|^2)): the group's scatter around its own mean over
  what n activations drawn at random from the recipe's would have (1 in expectation). An explanation that names
  what its vectors share has a small spread (its AR reconstruction can be close to all of them); the AV's fallback
  templates have a spread near 1. Flagged when spread >= `template_spread`. It is also the best fve_nrm a single
  reconstruction of that text could reach on its vectors, relative to the recipe's: 1 - spread.
- **low_norm**: the input's norm is at or below the `low_norm_percentile` of the norms of all activations of its layer
  and source in the lake (and below 0.999 x their median, so a source of equal-norm vectors, such as unit SAE
  decoder rows, flags nothing); judged where that (layer, source) has `low_norm_min_rows` vectors.

refresh() computes both over every row of a recipe (so reruns and resumed runs end with the flags an undisturbed
run would have) and rewrites only the shards whose flags change, with the same per-shard atomic commit the job
uses. It reads the recipe's vectors once, streamed. It does not judge single rows (flags.py does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from nla.lake.query import LakeQuery
from nla.lake.schema import vectors_from_arrow
from nla.lake.store import Lake
from nla.quality.flags import LOW_NORM, TEMPLATE, TEMPLATE_KEY_SQL, ordered
from nla.quality.settings import QualitySettings
from nla.schemas import ACTIVATIONS, EXPLANATIONS

E = EXPLANATIONS.col
MEDIAN_MARGIN = 0.999  # low_norm also needs norm < this x the group's median: equal norms flag nothing


@dataclass
class Templates:
    spread: dict[str, float] = field(default_factory=dict)  # text key -> spread, for groups large enough to judge
    flagged: list[str] = field(default_factory=list)  # the keys flagged template


@dataclass
class RefreshResult:
    templates: Templates
    thresholds: dict[tuple[int, str], float]  # (layer, source) -> the norm below which an input is low_norm
    shards_rewritten: int


def template_spreads(q: LakeQuery, recipe: str, s: QualitySettings) -> Templates:
    """The spread of every text that explains at least template_min_vectors activations under `recipe`."""
    where = f"recipe = $r AND {E.status} = 'ok' AND {E.explanation} IS NOT NULL"
    cand = q.run(f"SELECT k, count(DISTINCT act_id) n FROM (SELECT {TEMPLATE_KEY_SQL} k, act_id FROM explanations "
                 f"WHERE {where}) WHERE k <> '' GROUP BY k HAVING n >= $n", {"r": recipe, "n": s.template_min_vectors},
                 checked=True, limit=None)
    keys = cand.column("k").to_pylist()
    out = Templates()
    if not keys:
        return out
    index = {k: i for i, k in enumerate(keys)}
    sums: np.ndarray | None = None  # (groups, d) sums of unit vectors, float64
    total, n_total = None, 0
    counts = np.zeros(len(keys))
    # every explained activation once (with its text key per distinct text), vectors streamed
    sql = (f"SELECT e.k, a.vector FROM (SELECT DISTINCT act_id, {TEMPLATE_KEY_SQL} k FROM explanations WHERE {where})"
           " e JOIN activations a USING (act_id)")
    for b in q.stream(sql, {"r": recipe}, batch_rows=4096, checked=True):
        v = vectors_from_arrow(b.column(1)).astype(np.float64)
        u = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        if sums is None:
            sums, total = np.zeros((len(keys), u.shape[1])), np.zeros(u.shape[1])
        total += u.sum(0)
        n_total += len(u)
        g = np.array([index.get(k, -1) for k in b.column(0).to_pylist()])
        hit = g >= 0
        np.add.at(sums, g[hit], u[hit])
        np.add.at(counts, g[hit], 1)
    if not n_total:
        return out
    mu = total / n_total
    population = 1.0 - float(mu @ mu)  # mean squared distance of a unit activation from the mean
    for k, i in index.items():
        n = counts[i]
        if n < max(2, s.template_min_vectors) or population <= 0:
            continue
        m = sums[i] / n
        spread = (1.0 - float(m @ m)) / ((1.0 - 1.0 / n) * population)
        out.spread[k] = spread
        if spread >= s.template_spread:
            out.flagged.append(k)
    return out


def norm_thresholds(q: LakeQuery, s: QualitySettings) -> dict[tuple[int, str], float]:
    """(layer, source) -> the low_norm threshold, for groups with enough vectors."""
    A = ACTIVATIONS.col
    rows = q.run(f"SELECT {A.layer} l, {A.source} s, quantile_cont({A.norm}, $p) t, median({A.norm}) m, count(*) n "
                 "FROM activations GROUP BY ALL", {"p": s.low_norm_percentile / 100.0}, checked=True,
                 limit=None).to_pylist()
    return {(r["l"], r["s"]): min(r["t"], MEDIAN_MARGIN * r["m"]) for r in rows if r["n"] >= s.low_norm_min_rows}


def refresh(lake: Lake, recipe: str, settings: QualitySettings | None = None, *, run_id: str = "quality",
            config_hash: str = "", log: Callable[[str], None] = print) -> RefreshResult:
    """Set `template` and `low_norm` on every explanation of `recipe` from the lake as it is now; rewrite the shards
    whose flags change (the others are untouched)."""
    s = settings or QualitySettings()
    with LakeQuery(lake) as q:
        templates = template_spreads(q, recipe, s)
        thresholds = norm_thresholds(q, s)
        q.con.register("_template_keys", pa.table({"k": pa.array(templates.flagged, pa.string())}))
        q.con.register("_norm_thresholds", pa.table({
            "l": pa.array([k[0] for k in thresholds], pa.int32()), "s": pa.array([k[1] for k in thresholds]),
            "t": pa.array(list(thresholds.values()), pa.float64())}))
        # per row: should it carry each lake flag now (t, l), and does it (ht, hl)
        rows_sql = (f"SELECT e.shard, e.act_id, e.sample, "
                    f"coalesce(e.{E.status} = 'ok' AND {TEMPLATE_KEY_SQL} IN (SELECT k FROM _template_keys), false) t, "
                    f"coalesce(a.norm <= n.t, false) l, list_contains(e.flags, '{TEMPLATE}') ht, "
                    f"list_contains(e.flags, '{LOW_NORM}') hl FROM explanations e "
                    f"LEFT JOIN activations a USING (act_id) LEFT JOIN _norm_thresholds n ON n.l = a.layer AND "
                    f"n.s = a.source WHERE e.recipe = $r")
        changed = q.run(f"SELECT DISTINCT shard FROM ({rows_sql}) WHERE t <> ht OR l <> hl ORDER BY shard",
                        {"r": recipe}, checked=True, limit=None).column(0).to_pylist()
        for shard in changed:
            want = q.run(f"SELECT act_id, sample, t, l FROM ({rows_sql}) WHERE shard = $s", {"r": recipe, "s": shard},
                         checked=True, limit=None).to_pylist()
            _rewrite(lake, shard, recipe, {(w["act_id"], w["sample"]): (w["t"], w["l"]) for w in want},
                     run_id=run_id, config_hash=config_hash)
    if changed:
        log(f"[quality] recipe {recipe}: {len(templates.flagged)} template texts, low_norm thresholds for "
            f"{len(thresholds)} (layer, source) groups; flags updated in {len(changed)} shards")
    return RefreshResult(templates, thresholds, len(changed))


def _rewrite(lake: Lake, shard: str, recipe: str, want: dict[tuple[str, int], tuple[bool, bool]], *, run_id: str,
             config_hash: str) -> None:
    """Replace the rows of (shard, recipe) with the same rows carrying their new lake flags."""
    import pyarrow.dataset as pds

    schema = lake.arrow_schema(EXPLANATIONS.name)
    ds = lake.table(EXPLANATIONS.name).to_pyarrow_dataset(schema=schema)
    rows = ds.to_table(filter=(pds.field(E.shard) == shard) & (pds.field(E.recipe) == recipe))
    flags = []
    for act, sample, old in zip(rows.column(E.act_id).to_pylist(), rows.column(E.sample).to_pylist(),
                                rows.column(E.flags).to_pylist()):
        t, low = want.get((act, sample), (False, False))
        keep = {f for f in (old or []) if f not in (TEMPLATE, LOW_NORM)}
        flags.append(ordered(keep | ({TEMPLATE} if t else set()) | ({LOW_NORM} if low else set())))
    rows = rows.set_column(rows.schema.get_field_index(E.flags), E.flags, pa.array(flags, pa.list_(pa.string())))
    lake.commit_shard(EXPLANATIONS, rows, shard=shard, run_id=run_id, recipe=recipe, config_hash=config_hash,
                      ledger=False)
