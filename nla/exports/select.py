"""Which labels an export takes: one SQL over the `labels` view, the user's condition checked by the query sandbox.
Shared by every export format; it writes nothing."""

from __future__ import annotations

from nla.errors import NLAInputError
from nla.lake.query import LakeQuery

EXPORT_TIMEOUT_S = 24 * 3600.0  # an export streams the whole selection: no 30 s interactive cap


def where_clause(q: LakeQuery, where: str) -> str:
    """' AND (cond)' for a user's condition over the labels columns, checked as a SELECT first; '' for none."""
    if not where.strip():
        return ""
    q.check(f"SELECT * FROM labels WHERE {where}")
    try:
        q.run(f"SELECT * FROM labels WHERE {where} LIMIT 0", checked=True)
    except Exception as e:
        raise NLAInputError(f"--where {where!r}: {e} Fix: write a SQL condition over the labels columns (nla "
                            "query \"DESCRIBE labels\" lists them), e.g. --where \"source = 'sae:res' AND mse < 1\".")
    return f" AND ({where})"


def require_labels(q: LakeQuery) -> None:
    if "labels" not in q.views():
        raise NLAInputError(f"lake {q.lake.root} has no explanations to export. Fix: label it first (`nla label`, or "
                            "`nla import` then `nla label --from-activations`), or pass --lake the lake that has "
                            "them.")
