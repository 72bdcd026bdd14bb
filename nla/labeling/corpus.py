"""Corpus shards: find them (a folder of parquet/jsonl/txt, a Delta table, a saved HF datasets folder) and read them.

A shard is one file; its id is its path relative to the input root, stable across machines and reruns. Reading is
streamed in batches of documents and never fails on a bad document: non-UTF-8 bytes, unparsable JSON, a missing
text key or an empty text become a row with an `error` message. A shard that cannot be opened at all (a corrupt
parquet file) raises ShardError with the reason. No Ray here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nla.errors import NLAInputError
from nla.extract import doc_id_for

SUFFIX_FORMAT = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt", ".arrow": "hf"}


class ShardError(Exception):
    """The whole shard is unreadable; the message says why."""


@dataclass(frozen=True)
class Shard:
    id: str  # the unit id once fingerprinted (name@fingerprint, nla.labeling.identity); the name before
    path: str  # absolute path or URI
    format: str  # parquet | jsonl | txt | hf | lake
    name: str = ""  # path relative to the input root
    fingerprint: str = ""  # blake2b of the bytes ('' until fingerprinted)
    size: int | None = None  # bytes

    def fingerprinted(self) -> Shard:
        from nla.labeling.identity import file_fingerprint, unit_id

        fp, size = file_fingerprint(self.path)
        return Shard(unit_id(self.id, fp), self.path, self.format, name=self.id, fingerprint=fp, size=size)

    @property
    def source(self) -> dict:
        """The ledger's record of this shard."""
        return {"name": self.name or self.id, "path": self.path, "fingerprint": self.fingerprint, "size": self.size}


def list_shards(input_path: str, input_format: str = "auto") -> list[Shard]:
    """All shards under `input_path`, sorted by id."""
    if not input_path:
        raise NLAInputError("input is empty. Fix: set input=PATH (a folder of *.parquet/*.jsonl/*.txt shards, a Delta "
                            "table or a saved HF datasets folder) in the config or on the command line.")
    root = Path(input_path).expanduser()
    if not root.exists():
        raise NLAInputError(f"input {input_path}: no such file or folder. Fix: point input= at the corpus.")
    if root.is_file():
        fmt = input_format if input_format != "auto" else SUFFIX_FORMAT.get(root.suffix)
        if fmt is None:
            raise NLAInputError(f"input {input_path}: unknown file type {root.suffix!r}. Fix: use .parquet, .jsonl or "
                                ".txt, or set input_format.")
        return [Shard(root.name, str(root.resolve()), fmt)]
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
        fmt = SUFFIX_FORMAT.get(f.suffix) if input_format == "auto" else input_format
        hidden = any(p.startswith(".") for p in f.relative_to(root).parts)  # inside the input; ~/.cache/x is fine
        if f.is_file() and fmt in ("parquet", "jsonl", "txt") and not hidden:
            shards.append(Shard(str(f.relative_to(root)), str(f.resolve()), fmt))
    if not shards:
        raise NLAInputError(f"input {input_path}: no *.parquet, *.jsonl or *.txt shards found. Fix: check the folder, "
                            "or set input_format.")
    return shards


def read_shard(shard: Shard, *, text_column: str = "text", id_column: str = "",
               batch_docs: int = 64) -> Iterator[dict[str, list]]:
    """Batches of {doc_id, text, error}; error is '' for good documents."""
    reader = {"parquet": _read_table, "hf": _read_table, "jsonl": _read_jsonl, "txt": _read_txt}[shard.format]
    batch: dict[str, list] = {"doc_id": [], "text": [], "error": []}
    for doc_id, text, error in reader(shard, text_column, id_column):
        if not error and not text.strip():
            error = "empty document"
        batch["doc_id"].append(doc_id or (doc_id_for(text) if not error else f"{shard.id}#{len(batch['text'])}"))
        batch["text"].append(text if not error else "")
        batch["error"].append(error)
        if len(batch["text"]) >= batch_docs:
            yield batch
            batch = {"doc_id": [], "text": [], "error": []}
    if batch["text"]:
        yield batch


def _read_table(shard: Shard, text_column: str, id_column: str) -> Iterator[tuple[str, str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [text_column] + ([id_column] if id_column else [])
    try:
        if shard.format == "hf":
            source = pa.memory_map(shard.path)
            try:
                batches = iter(pa.ipc.open_stream(source))
            except pa.ArrowInvalid:
                batches = iter(pa.ipc.open_file(source).iter_batches())
        else:
            pf = pq.ParquetFile(shard.path)
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
    except ShardError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"shard {shard.id}: unreadable ({str(e).splitlines()[0][:200]}). Fix: re-export the file; "
                         "the other shards are committed.") from e


def _read_jsonl(shard: Shard, text_column: str, id_column: str) -> Iterator[tuple[str, str, str]]:
    try:
        f = open(shard.path, "rb")
    except OSError as e:
        raise ShardError(f"shard {shard.id}: cannot open ({e}).") from e
    with f:
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


def _read_txt(shard: Shard, text_column: str, id_column: str) -> Iterator[tuple[str, str, str]]:
    try:
        data = Path(shard.path).read_bytes()
    except OSError as e:
        raise ShardError(f"shard {shard.id}: cannot open ({e}).") from e
    try:
        yield "", data.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        yield shard.name or shard.id, "", f"not UTF-8 text (byte {e.start})"
