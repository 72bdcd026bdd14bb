"""Where a table's ANN index lives and how it is published: files under <lake root>/_index/<table>/.

Every file goes through a pyarrow filesystem: the local disk for folder lakes, deltalake's object-store bridge (the
lake's own storage options) for s3:// gs:// abfs:// roots. Segment files get fresh unique names and are written first;
the manifest that names them is published last, in one step (a rename on a local disk, one PUT on an object store),
so a writer killed at any point leaves the previous manifest (a usable index) or none: never a corrupt one. Readers
take the newest manifest that parses. This module does not know faiss (ann.py does) and never touches Delta tables.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INDEX_DIR = "_index"
FORMAT = 1
KEEP_MANIFESTS = 2  # older manifests (and files only they name) are deleted; a reader on the previous one keeps working
ORPHAN_GRACE_S = 3600  # files of a killed build are deleted this long after they were written
_MANIFEST = re.compile(r"manifest-(\d+)\.json$")


@dataclass
class Segment:
    name: str  # file stem: <name>.faiss (codes), <name>.vec (the rows' stored vectors), <name>.ids.parquet
    rows: int
    files: list[str]  # the table's data files (dataset fragment paths) whose rows this segment holds


@dataclass
class Manifest:
    table: str
    table_version: int  # the Delta version whose data files the segments cover
    d: int
    vector_dtype: str  # the table's storage dtype, kept byte for byte in the .vec files
    kind: str  # "flat" (exact inner product) or "ivfpq"
    params: dict[str, Any]
    trained: str  # file holding the trained, empty faiss index new segments are encoded with
    segments: list[Segment] = field(default_factory=list)
    seq: int = 0
    format: int = FORMAT

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def files(self) -> set[str]:
        return {f for s in self.segments for f in s.files}

    def names(self) -> set[str]:
        """Every file this manifest needs."""
        return {self.trained} | {f"{s.name}{ext}" for s in self.segments for ext in (".faiss", ".vec", ".ids.parquet")}


class IndexFiles:
    """The folder of one table's index, read and written through a pyarrow filesystem."""

    def __init__(self, lake: Any, table: str) -> None:
        import pyarrow.fs as pafs

        self.table = table
        if lake.is_local:
            self.where = str(Path(lake.root).expanduser().resolve() / INDEX_DIR / table)
            self.fs = pafs.SubTreeFileSystem(self.where, pafs.LocalFileSystem())
            self.local = True
        else:
            from deltalake.fs import DeltaStorageHandler

            self.where = f"{lake.root}/{INDEX_DIR}/{table}"
            self.fs = pafs.PyFileSystem(DeltaStorageHandler(self.where, lake.storage_options))
            self.local = False

    # ---- reading ------------------------------------------------------------------------------------------------------
    def manifest(self) -> Manifest | None:
        """The newest manifest that parses, or None when there is no index."""
        return next(self._readable(), None)

    def _readable(self) -> Any:
        """The manifests that parse, newest first (an unreadable one is skipped: the previous one still describes
        a complete index)."""
        for _, name in sorted(self._manifests(), reverse=True):
            try:
                raw = json.loads(self.read_bytes(name))
                raw["segments"] = [Segment(**s) for s in raw["segments"]]
                m = Manifest(**raw)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if m.format == FORMAT:
                yield m

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(name) as f:
            return f.read()

    def open(self, name: str) -> Any:
        """A random-access file (read_at) for reranking rows."""
        return self.fs.open_input_file(name)

    def size(self, name: str) -> int:
        return self.fs.get_file_info(name).size or 0

    # ---- writing ------------------------------------------------------------------------------------------------------
    def new_name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    def output(self, name: str) -> Any:
        """A stream that writes `name` (a fresh, not yet published name)."""
        if self.local:
            Path(self.where).mkdir(parents=True, exist_ok=True)
        return self.fs.open_output_stream(name)

    def write_bytes(self, name: str, data: bytes | memoryview) -> None:
        with self.output(name) as f:
            f.write(data)

    def publish(self, manifest: Manifest) -> Manifest:
        """Make `manifest` the index in one step (sequence number = previous + 1), then drop what no kept manifest
        names."""
        manifest.seq = max((s for s, _ in self._manifests()), default=0) + 1
        final = f"manifest-{manifest.seq:010d}.json"
        body = json.dumps(asdict(manifest), indent=1).encode()
        if self.local:
            tmp = f".{self.new_name('tmp')}.json"
            self.write_bytes(tmp, body)
            self.fs.move(tmp, final)  # rename: atomic on a POSIX filesystem
        else:
            self.write_bytes(final, body)  # one PUT: an object appears whole or not at all
        self._collect()
        return manifest

    def _manifests(self) -> list[tuple[int, str]]:
        return [(int(m.group(1)), i.base_name) for i in self._listing() if (m := _MANIFEST.match(i.base_name))]

    def _listing(self) -> list[Any]:
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector("", allow_not_found=True))
        except (OSError, FileNotFoundError):
            return []
        return [i for i in infos if i.type == pafs.FileType.File]

    def _collect(self) -> None:
        """Delete files no kept manifest names (older manifests, segments of killed or superseded builds)."""
        keep: set[str] = set()
        for m, _ in zip(self._readable(), range(KEEP_MANIFESTS)):
            keep |= m.names() | {f"manifest-{m.seq:010d}.json"}
        now = time.time()
        for info in self._listing():
            # an unnamed segment younger than the grace period may belong to a build still running: leave it
            young = info.mtime is not None and now - info.mtime.timestamp() < ORPHAN_GRACE_S
            if info.base_name not in keep and (_MANIFEST.match(info.base_name) or not young):
                try:
                    self.fs.delete_file(info.base_name)
                except OSError:
                    pass
