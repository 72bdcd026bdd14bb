"""Vectors and rows across JSON: float lists or base64 little-endian float32 in, the same out; NaN never leaks.

Decoding checks shape and values against the model's d (nla.injection.as_vectors: right d, finite, non-zero) and
names the request field in every error. This module knows nothing about HTTP or Ray.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import math
from typing import Any, Literal

import numpy as np

from nla.errors import NLAInputError

Encoding = Literal["list", "base64"]


def _from_base64(text: str, field: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NLAInputError(f"{field}: not valid base64 ({e}). Fix: send base64 of little-endian float32 bytes, or a "
                            "list of floats.") from e
    if len(raw) % 4:
        raise NLAInputError(f"{field}: {len(raw)} bytes is not a whole number of float32 values. Fix: encode "
                            "np.asarray(v, '<f4').tobytes().")
    return np.frombuffer(raw, dtype="<f4")


def decode_vectors(value: Any, d: int, *, field: str = "vectors") -> np.ndarray:
    """(N, d) float32 from a list of float lists, a list of base64 strings, or one base64 string of N*d floats."""
    if isinstance(value, str):
        flat = _from_base64(value, field)
        if flat.size == 0 or flat.size % d:
            raise NLAInputError(f"{field}: {flat.size} floats is not a multiple of d_model={d}. Fix: send N*{d} "
                                "float32 values.")
        rows: Any = flat.reshape(-1, d)
    elif isinstance(value, list):
        rows = [_from_base64(v, f"{field}[{i}]") if isinstance(v, str) else v for i, v in enumerate(value)]
        for i, r in enumerate(rows):
            if not isinstance(r, (list, np.ndarray)):
                raise NLAInputError(f"{field}[{i}]: expected a list of {d} floats or a base64 string, got "
                                    f"{type(r).__name__}.")
            if len(r) != d:
                raise NLAInputError(f"{field}[{i}]: {len(r)} values but this model reads vectors of d_model={d}. Fix: "
                                    "extract activations with the base model and layer in /v1/models.")
    else:
        raise NLAInputError(f"{field}: expected a list of vectors or a base64 string, got {type(value).__name__}.")
    from nla.injection import as_vectors  # torch: imported on the first vector, not when the ingress starts

    return as_vectors(rows, d, name=field).numpy()


def decode_vector(value: Any, d: int, *, field: str = "vector") -> np.ndarray:
    """(d,) float32 from one float list or one base64 string."""
    if isinstance(value, list) and value and isinstance(value[0], (list, str)):
        raise NLAInputError(f"{field}: expected one vector, got a list of {len(value)}. Fix: send one.")
    return decode_vectors([value], d, field=field)[0]


def encode_vector(v: np.ndarray, encoding: Encoding) -> list[float] | str:
    v = np.asarray(v, dtype="<f4")
    return base64.b64encode(v.tobytes()).decode("ascii") if encoding == "base64" else v.tolist()


def jsonable(value: Any) -> Any:
    """Arrow/numpy rows -> plain JSON: NaN/inf -> null, bytes -> base64, dates -> ISO strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value
