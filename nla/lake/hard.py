"""The retrain loop's questions to the lake: which labels a pair made, which documents are held out, where "hard"
begins, and a mined set's paired mse under two recipes. Each is one function over the `labels` and `explanations`
views; the filters are the SQL text `mine()` takes and stores with the rows. Not here: mining itself (mine.py), the
statistics of the pairs (jobs/retrain.py).
"""

from __future__ import annotations

import numpy as np

from nla.lake.query import LakeQuery
from nla.schemas import ACTIVATIONS, EXPLANATIONS

E, A = EXPLANATIONS.col, ACTIVATIONS.col
FAILED_MSE = 2.0  # a sample that explains nothing counts as an orthogonal guess


def labels_of(av_id: str, ar_id: str) -> str:
    """Filter: the ok labels that AV `av_id` wrote and AR `ar_id` scored."""
    return f"{E.status} = 'ok' AND {E.av} = '{av_id}' AND {E.ar} = '{ar_id}'"


def heldout(fraction: float) -> str:
    """Filter: the documents never trained on, `fraction` of them chosen by a hash of doc_id."""
    return f"(hash({A.doc_id}) % 1000) < {int(fraction * 1000)}"


def mse_quantile(q: LakeQuery, where: str, quantile: float) -> tuple[int, float | None]:
    """(rows of `labels` matching `where`, the `quantile` of their mse)."""
    stat = q.run(f"SELECT count(*) n, quantile_cont({E.mse}, {quantile}) t FROM labels WHERE {where}")
    return stat.column("n")[0].as_py(), stat.column("t")[0].as_py()


def paired_mse(q: LakeQuery, view: str, before: str, after: str) -> tuple[np.ndarray, np.ndarray]:
    """The mean mse over samples of each activation in the view `view` (a mined set) under recipe `before` and
    under recipe `after`, for the activations both labeled, in act_id order; a failed sample counts FAILED_MSE."""
    sql = f"""
WITH s AS (SELECT DISTINCT {E.act_id} FROM {view}),
m AS (SELECT {E.act_id}, {E.recipe}, avg(CASE WHEN {E.status} = 'ok' AND {E.mse} IS NOT NULL THEN {E.mse}
      ELSE {FAILED_MSE} END) mse
      FROM explanations WHERE {E.recipe} IN ('{before}', '{after}') AND {E.act_id} IN (SELECT {E.act_id} FROM s)
      GROUP BY ALL)
SELECT b.mse AS before, a.mse AS after FROM m b JOIN m a USING ({E.act_id})
WHERE b.{E.recipe} = '{before}' AND a.{E.recipe} = '{after}' ORDER BY {E.act_id}
"""
    t = q.run(sql, limit=None)
    return t.column("before").to_numpy(), t.column("after").to_numpy()
