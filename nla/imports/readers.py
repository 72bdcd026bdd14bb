"""Open a file of vectors and read it in blocks of rows, bounded in memory: .npy (read block by block from the file,
C or Fortran order), .safetensors (one
named tensor, an SAE's decoder matrix included; rows sliced from the file), Parquet or a Delta table (a vector
column, optionally a label column and metadata columns). Every problem with the file is one NLAInputError naming
it. This module does not check values or write anything (importer.py does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nla.errors import NLAInputError

FORMATS = {".npy": "npy", ".safetensors": "safetensors", ".parquet": "parquet"}


@dataclass
class Block:
    start: int  # index in the file of the first row
    vectors: np.ndarray  # (rows, d) float32
    labels: list[str | None] | None = None
    meta: list[str | None] | None = None  # a JSON object per row


@dataclass
class VectorFile:
    path: Path
    kind: str  # npy | safetensors | parquet | delta
    n: int  # rows in the file
    d: int
    tensor: str = ""  # safetensors: the tensor read
    transpose: bool = False  # the matrix is stored (d, n): vectors are its columns
    vector_column: str = ""
    label_column: str = ""
    meta_columns: tuple[str, ...] = ()
    _handle: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.tensor}" if self.tensor else self.path.name

    def blocks(self, start: int, stop: int, rows: int) -> Iterator[Block]:
        """Rows start..stop-1 in blocks of `rows` (the last may be shorter)."""
        if self.kind in ("parquet", "delta"):
            yield from self._table_blocks(start, stop, rows)
            return
        for a in range(start, stop, rows):
            b = min(stop, a + rows)
            yield Block(a, self._matrix_rows(a, b))

    def _matrix_rows(self, a: int, b: int) -> np.ndarray:
        if self.kind == "npy":
            return _npy_rows(self._handle, a, b, self.n, self.d, transpose=self.transpose)
        import torch

        sl = self._handle.get_slice(self.tensor)
        t = sl[:, a:b].T if self.transpose else sl[a:b]
        return np.ascontiguousarray(t.to(torch.float32).numpy())

    def _table_blocks(self, start: int, stop: int, rows: int) -> Iterator[Block]:
        import pyarrow as pa

        cols = [self.vector_column] + ([self.label_column] if self.label_column else []) + list(self.meta_columns)
        pending: list[pa.RecordBatch] = []
        seen, have, next_start = 0, 0, start
        for batch in _batches(self._handle, self.kind, cols):
            lo, hi = max(start - seen, 0), min(stop - seen, batch.num_rows)
            seen += batch.num_rows
            if hi > lo:
                pending.append(batch.slice(lo, hi - lo))
                have += hi - lo
            while have >= rows or (seen >= stop and have):
                table = pa.Table.from_batches(pending).combine_chunks()
                take, rest = table.slice(0, rows), table.slice(rows)
                yield self._block(next_start, take)
                next_start += take.num_rows
                pending, have = rest.to_batches(), rest.num_rows
            if seen >= stop:
                return

    def _block(self, start: int, table: Any) -> Block:
        vectors = _vector_column(table.column(self.vector_column), self, start)
        labels = None
        if self.label_column:
            labels = [None if v is None else str(v) for v in table.column(self.label_column).to_pylist()]
        meta = None
        if self.meta_columns:
            values = [table.column(c).to_pylist() for c in self.meta_columns]
            meta = [json.dumps(dict(zip(self.meta_columns, row)), default=str) for row in zip(*values)]
        return Block(start, vectors, labels, meta)


def open_vectors(path: str, *, tensor: str = "", transpose: bool = False, vector_column: str = "vector",
                 label_column: str = "", meta_columns: Sequence[str] = ()) -> VectorFile:
    """Open `path` and read its shape (no vector is read yet)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise NLAInputError(f"{path}: no such file or folder. Fix: pass a .npy, .safetensors or .parquet file, or a "
                            "Delta table folder.")
    kind = "delta" if (p / "_delta_log").is_dir() else FORMATS.get(p.suffix)
    if kind is None:
        raise NLAInputError(f"{path}: not a vector file nla reads (suffix {p.suffix!r}). Fix: save it as .npy "
                            "(numpy.save), .safetensors, .parquet with a vector column, or a Delta table.")
    if (tensor and kind != "safetensors") or ((label_column or meta_columns) and kind not in ("parquet", "delta")):
        what = "--tensor" if tensor and kind != "safetensors" else "--label-column/--meta-columns"
        raise NLAInputError(f"{path}: {what} does not apply to a {kind} file. Fix: drop it ({what} reads "
                            f"{'a named tensor of a .safetensors file' if what == '--tensor' else 'columns of a Parquet file or Delta table'}).")
    opener = {"npy": _open_npy, "safetensors": _open_safetensors, "parquet": _open_table, "delta": _open_table}[kind]
    return opener(p, kind, tensor=tensor, transpose=transpose, vector_column=vector_column,
                  label_column=label_column, meta_columns=tuple(meta_columns))


def _matrix_shape(p: Path, shape: Sequence[int], what: str, transpose: bool) -> tuple[int, int]:
    if len(shape) == 1:
        shape = (1, shape[0])
    if len(shape) != 2:
        raise NLAInputError(f"{p}: {what} has shape {tuple(shape)}; expected a matrix (vectors, d) or one vector "
                            "(d,). Fix: reshape it to 2-D before saving.")
    return (shape[1], shape[0]) if transpose else (shape[0], shape[1])


@dataclass(frozen=True)
class _Npy:
    path: Path
    offset: int  # where the data starts
    dtype: np.dtype
    fortran: bool


def _open_npy(p: Path, kind: str, *, transpose: bool, **_: Any) -> VectorFile:
    fmt = np.lib.format
    try:
        with open(p, "rb") as f:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError) as e:
        raise NLAInputError(f"{p}: not a readable .npy array ({e}). Fix: re-save it with numpy.save.") from e
    if not np.issubdtype(dtype, np.floating):
        raise NLAInputError(f"{p}: dtype {dtype}; vectors must be floating point. Fix: save them as float32.")
    n, d = _matrix_shape(p, shape, "the array", transpose)
    return VectorFile(p, kind, n, d, transpose=transpose, _handle=_Npy(p, offset, dtype, fortran and len(shape) == 2))


def _npy_rows(h: _Npy, a: int, b: int, n: int, d: int, *, transpose: bool) -> np.ndarray:
    """Vectors a..b-1 read from the file: one read when they lie contiguous (rows of a C-order (n, d), columns of a
    Fortran-order (d, n)), else one read per dimension (columns of a C-order (d, n), rows of a Fortran (n, d))."""
    size = h.dtype.itemsize
    with open(h.path, "rb") as f:
        if transpose == h.fortran:  # the vectors are contiguous
            f.seek(h.offset + a * d * size)
            m = np.fromfile(f, dtype=h.dtype, count=(b - a) * d).reshape(b - a, d)
        else:  # (d, n) in memory order: each dimension's values for a..b-1 are contiguous
            m = np.empty((d, b - a), h.dtype)
            for j in range(d):
                f.seek(h.offset + (j * n + a) * size)
                m[j] = np.fromfile(f, dtype=h.dtype, count=b - a)
            m = m.T
    return np.ascontiguousarray(m, dtype=np.float32)


def _open_safetensors(p: Path, kind: str, *, tensor: str, transpose: bool, **_: Any) -> VectorFile:
    from safetensors import safe_open

    try:
        handle = safe_open(str(p), framework="pt")
        names = list(handle.keys())
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise NLAInputError(f"{p}: not a readable .safetensors file ({str(e).splitlines()[0][:200]}). Fix: re-save "
                            "it with safetensors.") from e
    matrices = [k for k in names if len(handle.get_slice(k).get_shape()) == 2]
    if not tensor:
        if len(matrices) != 1:
            raise NLAInputError(f"{p}: {len(matrices)} matrices in the file ({', '.join(matrices[:20]) or 'none'}); "
                                "which one holds the vectors? Fix: pass --tensor NAME (an SAE's decoder is usually "
                                "W_dec).")
        tensor = matrices[0]
    if tensor not in names:
        raise NLAInputError(f"{p}: no tensor {tensor!r}; the file has {', '.join(names[:20])}"
                            f"{' ...' if len(names) > 20 else ''}. Fix: pass --tensor with one of those names.")
    n, d = _matrix_shape(p, handle.get_slice(tensor).get_shape(), f"tensor {tensor!r}", transpose)
    return VectorFile(p, kind, n, d, tensor=tensor, transpose=transpose, _handle=handle)


def _open_table(p: Path, kind: str, *, vector_column: str, label_column: str, meta_columns: tuple[str, ...],
                transpose: bool, **_: Any) -> VectorFile:
    import pyarrow as pa

    if transpose:
        raise NLAInputError(f"{p}: --transpose applies to matrices (.npy, .safetensors), not to a table's rows.")
    try:
        if kind == "delta":
            from deltalake import DeltaTable

            handle = DeltaTable(str(p)).to_pyarrow_dataset()
            schema, n = handle.schema, handle.count_rows()
        else:
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(p)
            schema, n = handle.schema_arrow, handle.metadata.num_rows
    except (OSError, pa.ArrowException, Exception) as e:  # noqa: BLE001 - deltalake's errors are its own
        raise NLAInputError(f"{p}: not a readable {kind} table ({str(e).splitlines()[0][:200]}). Fix: re-export "
                            "it.") from e
    missing = [c for c in (vector_column, label_column, *meta_columns) if c and c not in schema.names]
    if missing:
        raise NLAInputError(f"{p}: no column {missing[0]!r} (columns: {', '.join(schema.names)}). Fix: name the "
                            "vector column with --vector-column, the others with --label-column / --meta-columns.")
    t = schema.field(vector_column).type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) or \
            not pa.types.is_floating(t.value_type):
        raise NLAInputError(f"{p}: column {vector_column!r} is {t}, not a list of floats. Fix: store each vector "
                            "as a list (or fixed-size list) of float32.")
    f = VectorFile(p, kind, n, 0, vector_column=vector_column, label_column=label_column, meta_columns=meta_columns,
                   _handle=handle)
    if pa.types.is_fixed_size_list(t):
        f.d = t.list_size
    elif n:
        first = next(_batches(handle, kind, [vector_column], rows=1), None)
        f.d = len(first.column(0)[0]) if first is not None and first.num_rows else 0
    return f


def _batches(handle: Any, kind: str, columns: list[str], rows: int = 8192) -> Iterator[Any]:
    if kind == "delta":
        yield from handle.to_batches(columns=columns, batch_size=rows)
    else:
        yield from handle.iter_batches(columns=columns, batch_size=rows)


def _vector_column(col: Any, f: VectorFile, start: int) -> np.ndarray:
    """A list column -> (rows, d) float32; a row of another length is refused by its index."""
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if col.null_count:
        bad = col.is_null().to_numpy(zero_copy_only=False).argmax()
        raise NLAInputError(f"{f.path}: row {start + int(bad)} has no vector (null). Fix: drop the rows without "
                            "vectors before importing.")
    if not pa.types.is_fixed_size_list(col.type):
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(lengths != f.d)
        if len(wrong):
            raise NLAInputError(f"{f.path}: row {start + int(wrong[0])} has {int(lengths[wrong[0]])} values, the "
                                f"first row {f.d}. Fix: every vector must have the same width.")
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat, dtype=np.float32).reshape(-1, f.d)
