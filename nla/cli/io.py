"""CLI input and output helpers: reading vector files with clear errors, checking numeric options, printing aligned
tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nla.errors import NLAInputError


def read_vectors(path: str, rows: list[int] | None = None, *, d: int | None = None) -> np.ndarray:
    """(N, d) float32 from a .npy file holding one vector (d,) or a batch (N, d); `rows` selects some. With `d` (the
    checkpoint's d_model) the width and the values are checked here, so an error names the file and its rows."""
    p = Path(path)
    if not p.is_file():
        raise NLAInputError(f"--vectors {path}: no such file. Fix: save activations with numpy.save(path, array).")
    if p.suffix != ".npy":
        raise NLAInputError(f"--vectors {path}: unsupported format {p.suffix!r}. Fix: save a .npy file "
                            "(numpy.save) of shape (d,) or (N, d).")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise NLAInputError(f"--vectors {path}: not a readable .npy array ({e}). Fix: re-save it with numpy.save.")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise NLAInputError(f"--vectors {path}: shape {arr.shape} dtype {arr.dtype}; expected numbers of shape (d,) "
                            "or (N, d).")
    if rows is not None:
        bad = [r for r in rows if not 0 <= r < arr.shape[0]]
        if bad:
            raise NLAInputError(f"--row {bad}: {path} has rows 0..{arr.shape[0] - 1}. Fix: pick rows in that range.")
    picked = rows if rows is not None else list(range(arr.shape[0]))
    arr = arr[picked].astype(np.float32)
    if d is not None and arr.shape[1] != d:
        raise NLAInputError(f"--vectors {path}: shape {arr.shape} but the checkpoint reads vectors of d_model={d}. "
                            "Fix: extract activations with the base model and layer its sidecar names "
                            "(base_checkpoint, extraction_layer_index).")
    for what, bad_rows in (("contain NaN or inf", ~np.isfinite(arr).all(axis=1)), ("are all zeros", ~arr.any(axis=1))):
        if bad_rows.any():
            raise NLAInputError(f"--vectors {path}: rows {[picked[i] for i in np.flatnonzero(bad_rows)[:5]]} {what}. "
                                "Fix: leave those rows out (--row) or re-extract them.")
    return arr


def at_least_one(flag: str, value: int) -> int:
    """A count given on the command line (documents, rows, results, workers): 1 or more, else one line naming it."""
    if value < 1:
        raise NLAInputError(f"{flag} {value}: must be >= 1.")
    return value


def positive(flag: str, value: float) -> float:
    """A size or duration given on the command line (seconds, a norm): finite and above 0."""
    if not (math.isfinite(value) and value > 0):
        raise NLAInputError(f"{flag} {value}: must be a number above 0.")
    return value


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise NLAInputError(f"{flag} {text!r}: expected comma-separated integers, e.g. {flag} 3,7,12") from None


def print_table(rows: list[dict[str, Any]], columns: list[str], *, width: int = 70) -> None:
    """Aligned text table; long cells are cut to `width` characters, newlines shown as ' / '."""

    def cell(v: Any) -> str:
        s = f"{v:.4f}" if isinstance(v, float) else str(v)
        s = s.replace("\n\n", " / ").replace("\n", " ")
        return s if len(s) <= width else s[:width - 1] + "…"

    table = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
