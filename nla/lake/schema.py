"""pyarrow schemas from the declarations in schemas/, and the strict check every write goes through.

Vectors are fixed-size lists of d float32, or of d bfloat16 for activations extracted in bf16 (stored losslessly at 2
bytes a value as their int16 bit patterns: Delta and DuckDB have no bfloat16 type); d and the dtype are fixed when a
table is created and stored in its metadata. Readers go through vectors_from_arrow and get float32 back either
way. A batch that does not match exactly is refused with a message naming the columns: never a silent cast or drop. This module does not read or write tables (store.py does).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from nla.errors import NLASchemaError
from nla.schemas import TableSpec

VectorDtype = Literal["float32", "float16", "bfloat16"]
_SCALARS = {
    "string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(),
    "float64": pa.float64(), "bool": pa.bool_(), "timestamp": pa.timestamp("us", tz="UTC"), "json": pa.string(),
    "list<int64>": pa.list_(pa.int64()), "list<string>": pa.list_(pa.string()),
}
_VEC = {"float32": pa.float32(), "float16": pa.float16(), "bfloat16": pa.int16()}  # bfloat16: the bit patterns


def vector_type(d: int, dtype: VectorDtype = "float32") -> pa.DataType:
    return pa.list_(_VEC[dtype], d)


def arrow_schema(spec: TableSpec, *, d: int | None = None, vector_dtype: VectorDtype = "float32") -> pa.Schema:
    """The exact pyarrow schema of `spec`; tables with a vector column need d."""
    if spec.has_vector and not d:
        raise NLASchemaError(f"table {spec.name!r} stores vectors: its d (vector length) must be given. "
                             "Fix: pass d=the activation width (the sidecar's d_model).")
    if vector_dtype not in _VEC:
        raise NLASchemaError(f"vector_dtype {vector_dtype!r}: expected one of {sorted(_VEC)}.")
    fields = [pa.field(c.name, vector_type(d, vector_dtype) if c.type == "vector" else _SCALARS[c.type],
                       nullable=c.nullable) for c in spec.columns]
    return pa.schema(fields)


def vectors_to_arrow(vectors: np.ndarray, dtype: VectorDtype = "float32") -> pa.FixedSizeListArray:
    """(N, d) numbers -> the table's vector column type (the one explicit conversion, done by the caller). bfloat16
    rounds to nearest even: lossless for values a bf16 model produced."""
    v = np.ascontiguousarray(vectors, dtype=np.float16 if dtype == "float16" else np.float32)
    if v.ndim != 2:
        raise NLASchemaError(f"vectors of shape {v.shape}: expected (N, d).")
    flat = to_bfloat16_bits(v.reshape(-1)) if dtype == "bfloat16" else v.reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=_VEC[dtype]), v.shape[1])


def vectors_from_arrow(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A vector column (float32, float16 or bfloat16 bits) -> (N, d) float32 without per-row Python objects."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    d = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if flat.dtype == np.int16:
        flat = from_bfloat16_bits(flat)
    return flat.reshape(-1, d).astype(np.float32, copy=False)


def vector_dtype_of(type_: pa.DataType) -> VectorDtype:
    """The storage dtype of a vector column type (fixed-size list of float32, float16 or int16 = bfloat16 bits)."""
    return next(name for name, t in _VEC.items() if type_.value_type.equals(t))  # type: ignore[return-value]


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (int16), rounding to nearest even (NaN/inf never reach a table)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).view(np.int16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (int16 or uint16) -> float32, exactly."""
    return (np.asarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    """Equal types; list children compare by value type only (their field name and nullability vary by producer)."""
    if isinstance(want, pa.FixedSizeListType):
        return isinstance(have, pa.FixedSizeListType) and have.list_size == want.list_size and \
            have.value_type.equals(want.value_type)
    return have.equals(want)


def check_batch(spec: TableSpec, batch: pa.Table, expected: pa.Schema) -> pa.Table:
    """Refuse a batch whose columns or types differ from the table's; returns it with columns in table order."""
    have = {f.name: f.type for f in batch.schema}
    missing = [n for n in expected.names if n not in have]
    extra = [n for n in have if n not in expected.names]
    wrong = [f"{f.name}: got {have[f.name]}, table has {f.type}" for f in expected
             if f.name in have and not _same_type(have[f.name], f.type)]
    if missing or extra or wrong:
        parts = ([f"missing columns {missing}"] if missing else []) + ([f"unknown columns {extra}"] if extra else []) \
            + wrong
        raise NLASchemaError(f"rows for table {spec.name!r} do not match its schema (schemas/{spec.name}, version "
                             f"{spec.version}): " + "; ".join(parts) + ". Fix: build the batch with "
                             "nla.lake.schema.arrow_schema/vectors_to_arrow for this table's d and dtype.")
    for f in expected:
        if not f.nullable and batch.column(f.name).null_count:
            raise NLASchemaError(f"table {spec.name!r}: column {f.name!r} has {batch.column(f.name).null_count} "
                                 "nulls but is declared non-null. Fix: fill it or drop those rows upstream.")
        if isinstance(f.type, pa.FixedSizeListType) and batch.num_rows:
            # a NaN or inf vector would answer every cosine search with NaN: it never reaches a table
            bad = np.flatnonzero(~np.isfinite(vectors_from_arrow(batch.column(f.name))).all(axis=1))
            if len(bad):
                key = spec.key[0] if spec.key else f.name
                raise NLASchemaError(f"table {spec.name!r}: column {f.name!r} has {len(bad)} vectors with NaN or inf "
                                     f"values (first: {key} {batch.column(key)[int(bad[0])].as_py()!r}). Fix: drop "
                                     "them upstream, or extract in float32/bfloat16 if the model overflowed.")
    return batch.select(expected.names).cast(expected)
