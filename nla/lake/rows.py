"""Row builders: pipeline outputs (extractor columns, AV generations, AR scores) -> Arrow tables of the lake's schemas.

The only place that turns numpy/Python values into the tables' types (vectors as fixed-size float32 or bfloat16
lists). It does not write (store.py does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from nla.lake.schema import VectorDtype, arrow_schema, vectors_to_arrow
from nla.lake.store import now
from nla.quality.flags import row_flags
from nla.quality.settings import QualitySettings
from nla.schemas import ACTIVATIONS, EXPLANATIONS

A, E = ACTIVATIONS.col, EXPLANATIONS.col


def act_id(base_model: str, layer: int, doc_id: str, position: int) -> str:
    """Stable id of an activation: the same (base, layer, document, position) always gets the same id."""
    return hashlib.blake2b(f"{base_model}\x1f{layer}\x1f{doc_id}\x1f{position}".encode(), digest_size=12).hexdigest()


def storage_dtype(lake: Any, compute_dtype: str) -> VectorDtype:
    """How a job's activations are stored: bfloat16 when the model ran in bf16 (2 bytes a value, no loss), else
    float32; an existing table keeps the dtype it was created with (a lake's vectors have one dtype)."""
    if lake.exists(ACTIVATIONS.name):
        return lake.layout(ACTIVATIONS.name).get("vector_dtype", "float32")
    return "bfloat16" if compute_dtype == "bfloat16" else "float32"


CORPUS = "corpus"  # activations.source of the rows extraction wrote


def activation_table(cols: dict[str, Any], *, base_model: str, layer: int, shard: str,
                     run_id: str, recipe: str = "", vector_dtype: VectorDtype = "float32",
                     source: str = CORPUS) -> pa.Table:
    """Extractor output (doc_id, position, token_id, token, context, vector; imported vectors may also give label
    and meta, a JSON string each, and leave token_id/token/context None) -> rows of `activations`. vector_dtype
    "bfloat16" stores vectors a bf16 model produced at 2 bytes a value, without loss."""
    vectors = np.asarray(cols["vector"], dtype=np.float32)
    n, d = vectors.shape
    ids = [act_id(base_model, layer, str(doc), int(p)) for doc, p in zip(cols["doc_id"], cols["position"])]
    none = [None] * n
    data = {
        A.act_id: ids, A.base_model: [base_model] * n, A.layer: np.full(n, layer, np.int32),
        A.doc_id: [str(x) for x in cols["doc_id"]], A.position: np.asarray(cols["position"], np.int32),
        A.token_id: pa.array(cols["token_id"], pa.int64()) if cols.get("token_id") is not None else none,
        A.token: list(cols["token"]) if cols.get("token") is not None else none,
        A.context: list(cols["context"]) if cols.get("context") is not None else none,
        A.vector: vectors_to_arrow(vectors, vector_dtype),
        A.norm: np.linalg.norm(vectors, axis=1).astype(np.float32), A.shard: [shard] * n, A.recipe: [recipe] * n,
        A.source: [source] * n, A.label: list(cols["label"]) if cols.get("label") is not None else none,
        A.meta: list(cols["meta"]) if cols.get("meta") is not None else none, A.run_id: [run_id] * n,
    }
    return pa.table(data, schema=arrow_schema(ACTIVATIONS, d=d, vector_dtype=vector_dtype))


def explanation_table(act_ids: Sequence[str], *, explanation: Sequence[str | None], raw_output: Sequence[str],
                      status: Sequence[str], n_tokens: Sequence[int], av: str, ar: str, samples: Sequence[int],
                      shard: str, run_id: str, mse: Sequence[float | None] | None = None,
                      cos: Sequence[float | None] | None = None, recipe: str = "",
                      quality: QualitySettings | None = None) -> pa.Table:
    """AV outputs (per sample) + AR scores -> `explanations` rows. NaN scores are stored as null; each row gets the
    flags its own text and status give (nla.quality.flags.row_flags; the lake-wide ones come later)."""
    n = len(act_ids)
    flags = [row_flags(e, r, s, quality) for e, r, s in zip(explanation, raw_output, status)]

    def scores(values: Sequence[float | None] | None) -> pa.Array:
        if values is None:
            return pa.nulls(n, pa.float32())
        arr = np.asarray(values, dtype=np.float32)
        return pa.array(arr, pa.float32(), mask=np.isnan(arr))

    data = {
        E.act_id: list(act_ids), E.av: [av] * n, E.ar: [ar] * n, E.sample: np.asarray(samples, np.int32),
        # a batch whose every explanation is null can reach here as a float column (NaN for None): null it is
        E.explanation: [x if isinstance(x, str) else None for x in explanation],
        E.raw_output: [x if isinstance(x, str) else "" for x in raw_output],
        E.n_tokens: np.asarray(n_tokens, np.int32), E.status: list(status),
        E.mse: scores(mse), E.cos: scores(cos), E.flags: pa.array(flags, pa.list_(pa.string())), E.shard: [shard] * n, E.recipe: [recipe] * n, E.run_id: [run_id] * n,
        E.created_at: [now()] * n,
    }
    return pa.table(data, schema=arrow_schema(EXPLANATIONS))


def generation_columns(gens: Sequence[Any]) -> dict[str, list]:
    """AV Generation objects -> the keyword columns explanation_table takes."""
    return {"explanation": [g.explanation for g in gens], "raw_output": [g.raw_output for g in gens],
            "status": [g.status for g in gens], "n_tokens": [g.n_tokens for g in gens]}
