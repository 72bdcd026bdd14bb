"""Corpus shards: find them (a folder of parquet/jsonl/txt, a Delta table, a saved HF datasets folder) and read them,
from a local path or an s3:// prefix (listed and read through Arrow's S3 filesystem with the storage options of
nla/lake/storage.py, which the driver resolves and hands to the readers).

A shard is one file; its name is its path relative to the input root, stable across machines and reruns. Reading is
streamed in batches of documents and never fails on a bad document: non-UTF-8 bytes, unparsable JSON, a missing
text key or an empty text become a row with an `error` message. A shard that cannot be opened at all (a corrupt
parquet file) raises ShardError with the reason. No Ray here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nla.errors import NLAInputError
from nla.lake import storage
from nla.extract_config import doc_id_for

SUFFIX_FORMAT = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt", ".arrow": "hf"}


class ShardError(Exception):
    """The whole shard is unreadable; the message says why."""


@dataclass(frozen=True)
class Shard:
    id: str  # the unit id once fingerprinted (name@fingerprint, nla.labeling.identity); the name before
    path: str  # absolute path or URI
    format: str  # parquet | jsonl | txt | hf | lake
    name: str = ""  # path relative to the input root
    fingerprint: str = ""  # sha256 of the bytes ('' until fingerprinted)
    size: int | None = None  # bytes

    def fingerprinted(self, storage_options: dict[str, str] | None = None) -> Shard:
        from nla.labeling.identity import file_fingerprint, unit_id

        fp, size = file_fingerprint(self.path, storage_options)
        return Shard(unit_id(self.id, fp), self.path, self.format, name=self.id, fingerprint=fp, size=size)

    @property
    def source(self) -> dict:
        """The ledger's record of this shard."""
        return {"name": self.name or self.id, "path": self.path, "fingerprint": self.fingerprint, "size": self.size}


def list_shards(input_path: str, input_format: str = "auto",
                storage_options: dict[str, str] | None = None) -> list[Shard]:
    """All shards under `input_path` (a local path or an s3:// URI, reached with `storage_options`), sorted by id."""
    if not input_path:
        raise NLAInputError("input is empty. Fix: set input=PATH (a folder of *.parquet/*.jsonl/*.txt shards, a Delta "
                            "table or a saved HF datasets folder) in the config or on the command line.")
    if storage.scheme(input_path):
        return _list_remote(input_path.rstrip("/"), input_format, storage_options)
    root = Path(input_path).expanduser()
    if not root.exists():
        raise NLAInputError(f"input {input_path}: no such file or folder. Fix: point input= at the corpus.")
    if root.is_file():
        return [Shard(root.name, str(root.resolve()), _file_format(input_path, root.name, input_format))]
    if (root / "_delta_log").is_dir() or input_format == "delta":
        from deltalake import DeltaTable

        files = DeltaTable(str(root)).file_uris()
        return sorted((Shard(str(Path(f).relative_to(root.resolve())) if f.startswith("/") else f, f, "parquet")
                       for f in files), key=lambda s: s.id)
    if (root / "dataset_info.json").is_file() or (root / "state.json").is_file() or input_format == "hf":
        files = sorted(root.glob("*.arrow"))
        return [Shard(f.name, str(f.resolve()), "hf") for f in files]
    shards = []
    for f in sorted(root.rglob("*")):
        rel = str(f.relative_to(root))
        if f.is_file() and (fmt := _shard_format(rel, input_format)):
            shards.append(Shard(rel, str(f.resolve()), fmt))
    return _some(shards, input_path)


def _shard_format(rel: str, input_format: str) -> str | None:
    """The format of the file at `rel` (relative to the input root) when it is a shard: a known type, not hidden
    inside the input (~/.cache/x as the root is fine)."""
    fmt = SUFFIX_FORMAT.get(PurePosixPath(rel).suffix) if input_format == "auto" else input_format
    hidden = any(p.startswith(".") for p in PurePosixPath(rel).parts)
    return fmt if fmt in ("parquet", "jsonl", "txt") and not hidden else None


def _file_format(input_path: str, name: str, input_format: str) -> str:
    """The format of an input that is a single file."""
    fmt = input_format if input_format != "auto" else SUFFIX_FORMAT.get(PurePosixPath(name).suffix)
    if fmt is None:
        raise NLAInputError(f"input {input_path}: unknown file type {PurePosixPath(name).suffix!r}. Fix: use "
                            ".parquet, .jsonl or .txt, or set input_format.")
    return fmt


def _some(shards: list[Shard], input_path: str) -> list[Shard]:
    if not shards:
        raise NLAInputError(f"input {input_path}: no *.parquet, *.jsonl or *.txt shards found. Fix: check the folder, "
                            "or set input_format.")
    return shards


def _list_remote(uri: str, input_format: str, options: dict[str, str] | None) -> list[Shard]:
    """Shards under an s3:// prefix, found with one recursive listing (a Delta table through its log)."""
    import pyarrow.fs as pafs

    if not storage.is_s3(uri):
        raise NLAInputError(f"input {uri}: only local paths and s3:// are read ({storage.scheme(uri)}:// is not). "
                            "Fix: copy the corpus to a local folder or to an S3-compatible store.")
    fs, base = storage.s3_filesystem(options), storage.object_path(uri)
    try:
        info = fs.get_file_info(base)
        files = [] if info.type != pafs.FileType.Directory else \
            [f for f in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if f.type == pafs.FileType.File]
    except OSError as e:
        raise NLAInputError(f"input {uri}: cannot list it ({storage.reason(e)}). Fix: check the bucket exists and "
                            "that AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY point at "
                            "a store these credentials can read.") from e
    if info.type == pafs.FileType.NotFound:
        bucket = base.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise NLAInputError(f"input {uri}: no such bucket {bucket!r} at this endpoint. Fix: check the bucket name "
                                "and AWS_ENDPOINT_URL.")
        raise NLAInputError(f"input {uri}: no such object or prefix. Fix: point input= at the corpus (s3://bucket/"
                            "prefix).")
    if info.type == pafs.FileType.File:
        return [Shard(PurePosixPath(base).name, uri, _file_format(uri, base, input_format))]
    scheme = uri.split("://", 1)[0]
    rel = {f.path[len(base) + 1:]: f"{scheme}://{f.path}" for f in files}
    if any(r.startswith("_delta_log/") for r in rel) or input_format == "delta":
        from deltalake import DeltaTable

        data = DeltaTable(uri, storage_options=options).file_uris()
        return sorted((Shard(f.removeprefix(uri + "/"), f, "parquet") for f in data), key=lambda s: s.id)
    if {"dataset_info.json", "state.json"} & set(rel) or input_format == "hf":
        return [Shard(r, u, "hf") for r, u in sorted(rel.items()) if "/" not in r and r.endswith(".arrow")]
    return _some([Shard(r, u, fmt) for r, u in sorted(rel.items()) if (fmt := _shard_format(r, input_format))], uri)


def read_shard(shard: Shard, *, text_column: str = "text", id_column: str = "", batch_docs: int = 64,
               storage_options: dict[str, str] | None = None) -> Iterator[dict[str, list]]:
    """Batches of {doc_id, text, error}; error is '' for good documents. A shard on an object store is read with
    `storage_options`; losing the store part way raises ShardError (the shard is not committed; a rerun reads it)."""
    import pyarrow as pa

    reader = {"parquet": _read_table, "hf": _read_table, "jsonl": _read_jsonl, "txt": _read_txt}[shard.format]
    batch: dict[str, list] = {"doc_id": [], "text": [], "error": []}
    try:
        for doc_id, text, error in reader(shard, text_column, id_column, storage_options):
            if not error and not text.strip():
                error = "empty document"
            batch["doc_id"].append(doc_id or (doc_id_for(text) if not error else f"{shard.id}#{len(batch['text'])}"))
            batch["text"].append(text if not error else "")
            batch["error"].append(error)
            if len(batch["text"]) >= batch_docs:
                yield batch
                batch = {"doc_id": [], "text": [], "error": []}
    except (OSError, pa.ArrowException) as e:
        raise ShardError(_unreadable(shard, e)) from e
    if batch["text"]:
        yield batch


def _unreadable(shard: Shard, e: Exception) -> str:
    import pyarrow as pa

    if storage.scheme(shard.path) and isinstance(e, OSError) and not isinstance(e, pa.ArrowInvalid):
        return (f"shard {shard.id}: cannot read it from the store ({storage.reason(e)}). Fix: check that the store is "
                "reachable and these credentials can read it, then rerun: committed shards are skipped.")
    if isinstance(e, OSError) and not isinstance(e, pa.ArrowException):
        return f"shard {shard.id}: cannot open ({e})."
    return (f"shard {shard.id}: unreadable ({str(e).splitlines()[0][:200]}). Fix: re-export the file; the other "
            "shards are committed.")


def _read_table(shard: Shard, text_column: str, id_column: str,
                options: dict[str, str] | None) -> Iterator[tuple[str, str, str]]:
    import pyarrow as pa

    cols = [text_column] + ([id_column] if id_column else [])
    if storage.scheme(shard.path):
        source = storage.open_input(shard.path, options, random_access=True)
    else:
        source = pa.memory_map(shard.path) if shard.format == "hf" else shard.path
    try:
        yield from _table_rows(shard, source, cols)
    finally:
        if not isinstance(source, str):
            source.close()


def _table_rows(shard: Shard, source: Any, cols: list[str]) -> Iterator[tuple[str, str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    text_column, id_column = cols[0], (cols[1] if len(cols) > 1 else "")
    if shard.format == "hf":
        try:
            batches = iter(pa.ipc.open_stream(source))
        except pa.ArrowInvalid:
            batches = iter(pa.ipc.open_file(source).iter_batches())
    else:
        pf = pq.ParquetFile(source)
        missing = [c for c in cols if c not in pf.schema_arrow.names]
        if missing:
            raise ShardError(f"shard {shard.id}: no column {missing[0]!r} (columns: {pf.schema_arrow.names}). "
                             "Fix: set text_column= / id_column= to the right names.")
        batches = pf.iter_batches(columns=cols, batch_size=1024)
    for b in batches:
        if text_column not in b.schema.names:
            raise ShardError(f"shard {shard.id}: no column {text_column!r}. Fix: set text_column=.")
        texts = b.column(text_column).to_pylist()
        ids = b.column(id_column).to_pylist() if id_column else [None] * len(texts)
        for i, t in zip(ids, texts):
            if t is not None and not isinstance(t, str):
                yield (str(i) if i is not None else ""), "", f"text is {type(t).__name__}, not a string"
            else:
                yield (str(i) if i is not None else ""), t or "", ""


def _read_jsonl(shard: Shard, text_column: str, id_column: str,
                options: dict[str, str] | None) -> Iterator[tuple[str, str, str]]:
    with storage.open_input(shard.path, options) as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{shard.name or shard.id}:{n}"  # a place a person can open: file name and line
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield where, "", f"line {n}: not UTF-8 text"
                continue
            except json.JSONDecodeError as e:
                yield where, "", f"line {n}: not JSON ({e.msg})"
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get(text_column), str):
                seen = f"keys seen: {', '.join(map(str, list(obj)[:10]))}" if isinstance(obj, dict) else \
                    f"a JSON {type(obj).__name__}, not an object"
                yield where, "", f"line {n}: no string {text_column!r} key ({seen})"
                continue
            doc_id = str(obj[id_column]) if id_column and obj.get(id_column) is not None else ""
            yield doc_id, obj[text_column], ""


def _read_txt(shard: Shard, text_column: str, id_column: str,
              options: dict[str, str] | None) -> Iterator[tuple[str, str, str]]:
    with storage.open_input(shard.path, options) as f:
        data = f.read()
    try:
        yield "", data.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        yield shard.name or shard.id, "", f"not UTF-8 text (byte {e.start})"
