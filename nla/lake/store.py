"""The lake: Delta tables under one root (a folder, or s3:// gs:// abfs:// with storage options).

Writes go through the declarations in schemas/ and are refused on any mismatch. Sharded tables (activations,
explanations) are partitioned by shard and committed one shard at a time with a predicate overwrite, so a retried
shard replaces its rows instead of duplicating them; the `shards` ledger records what each run committed. Every
commit carries run_id and config_hash. Also: merge on key, compaction, vacuum with safe retention, time travel.
This module does not run queries (query.py does).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nla.errors import NLACommitConflict, NLALakeError, NLASchemaError, NLAStoreUnreachable, NLATableNotFound
from nla.lake import storage
from nla.lake.schema import VectorDtype, arrow_schema, check_batch, vector_dtype_of
from nla.schemas import ALL, SHARDS, TRAINING_SET, TableSpec

DEFAULT_LAKE = "./lake"
ROW_GROUP_BYTES = 32 * 2**20  # vector tables: row groups of ~32 MiB, so readers stream in bounded pieces
SAFE_RETENTION_HOURS = 168  # vacuum never deletes files younger than this unless told to, so readers and time travel
COMMIT_RETRIES = 8  # a commit that lost a race is retried at least this many times
COMMIT_RETRY_S = 120.0  # and for at least this long: a slow writer beside a busy compactor keeps its turn coming


def default_root() -> str:
    """$NLA_LAKE, else ./lake."""
    return os.environ.get("NLA_LAKE") or DEFAULT_LAKE


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# Delta writes a checkpoint (the table's state in one Parquet file) every this many commits, and a reader replays only
# the JSON log entries after the last one. Delta's default, 100, meant up to 100 reads per table load, each a GET on
# an object store: the data tables and the shard ledger take commits per shard (3 commit drivers and a compaction loop
# on one s3:// lake read 17,236 log files with the default, 4,921 with 10; docs/lake.md).
CHECKPOINT_INTERVAL = 10


@dataclass
class TableInfo:
    name: str
    spec: str
    version: int
    rows: int
    d: int | None
    schema: pa.Schema


class Lake:
    """Delta tables declared in schemas/, under `root`."""

    def __init__(self, root: str | Path | None = None, *, storage_options: dict[str, str] | None = None) -> None:
        self.root = str(root or default_root()).rstrip("/")
        # explicit options win key by key over the environment's (nla/lake/storage.py decides, for every reader)
        self.storage_options = storage.storage_options(self.root, storage_options)
        self.is_local = "://" not in self.root
        self.conflicts = 0  # commits this object retried because a concurrent writer committed first
        self.store_waits = 0  # writes this object ran again because the store did not answer (a restart)
        self.store_wait_s = storage.store_wait_s() if not self.is_local else 0.0  # checked here, not mid-outage
        self.on_store_wait: Callable[[str], None] | None = None  # told once per outage, when it starts and ends
        self._down_since: float | None = None  # monotonic time the store stopped answering; None while it answers

    # ---- addressing -------------------------------------------------------------------------------------------------
    def uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri(name), storage_options=self.storage_options)

    def _open(self, name: str) -> Any:
        """The DeltaTable `name` at its latest version, or None where there is none. One load of its log: on an
        object store each load is a LIST and a GET per log entry since the last checkpoint, so a commit loads its
        table once and writes through that object (its version follows the commit) instead of loading it again."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri(name), storage_options=self.storage_options)
        except TableNotFoundError as e:
            if not self.is_local and storage.unreachable(e):
                raise
            return None

    def table(self, name: str, *, version: int | str | None = None) -> Any:
        """The DeltaTable `name` (optionally at a version or ISO timestamp); NLATableNotFound if absent."""
        t = self._open(name)
        if t is None:
            known = ", ".join(self.names()) or "none yet"
            raise NLATableNotFound(f"table {name!r} not found in lake {self.root} (tables: {known}). Fix: run the job "
                                   "that writes it (`nla label`), or pass --lake to the lake that has it.")
        if version is not None:
            try:
                t.load_as_version(version)
            except Exception as e:
                raise NLALakeError(f"table {name!r} has no version {version!r} (latest is {t.version()}). Fix: pick "
                                   "one from `nla tables` / the table's history.") from e
        return t

    def names(self) -> list[str]:
        """Tables present under the root (local lakes list the folder; remote ones probe the declared names)."""
        if self.is_local:
            root = Path(self.root)
            if not root.is_dir():
                return []
            logs = [*root.glob("*/_delta_log"), *root.glob(f"{TRAINING_SET.name}/*/_delta_log")]  # not partitions
            # a log with no commit is a table whose first write failed (a full disk): not a table
            return sorted(p.parent.relative_to(root).as_posix() for p in logs
                          if any(f.name[:1].isdigit() for f in p.iterdir()))
        from deltalake.exceptions import DeltaError

        try:
            return [n for n in ALL if self.exists(n)]
        except (OSError, DeltaError) as e:  # the first read of a command: one line that says why
            raise storage.read_error(self.root, e) from None

    # ---- metadata -----------------------------------------------------------------------------------------------------
    def layout(self, name: str, *, table: Any = None) -> dict[str, Any]:
        """{schema, schema_version, d, vector_dtype} stored in the table's description at creation (read from
        `table`, the DeltaTable `name` already loaded, where given)."""
        desc = (table if table is not None else self.table(name)).metadata().description or "{}"
        try:
            return json.loads(desc)
        except json.JSONDecodeError:
            return {}

    def arrow_schema(self, name: str, spec: TableSpec | None = None, *, table: Any = None) -> pa.Schema:
        """The exact schema rows of `name` must have (vectors as fixed-size lists of the table's d)."""
        info = self.layout(name, table=table)
        spec = spec or ALL[info.get("schema", name)]
        if info.get("schema_version", spec.version) != spec.version:
            raise NLASchemaError(f"table {name!r} in lake {self.root} was written with schema version "
                                 f"{info['schema_version']} of {spec.name!r}; this nla reads version {spec.version}. "
                                 f"Fix: `nla migrate --lake {self.root}` upgrades the lake in place (one atomic "
                                 "commit per table; rerun it if interrupted).")
        return arrow_schema(spec, d=info.get("d"), vector_dtype=info.get("vector_dtype", "float32"))

    def create(self, spec: TableSpec, *, name: str | None = None, d: int | None = None,
               vector_dtype: VectorDtype = "float32") -> None:
        """Create an empty table for `spec` (no-op if it exists with the same d)."""
        from deltalake import write_deltalake

        name = name or spec.name
        if vector_dtype == "float16":
            raise NLASchemaError(f"vector_dtype {vector_dtype!r}: Delta Lake (delta-rs) and DuckDB cannot store or read "
                                 "float16 arrays yet. Fix: use float32, or bfloat16 for vectors a bf16 model made.")
        schema = arrow_schema(spec, d=d, vector_dtype=vector_dtype)
        if (t := self._open(name)) is not None:
            have = self.layout(name, table=t).get("d")
            if spec.has_vector and have != d:
                raise NLASchemaError(f"table {name!r} stores vectors of d={have}, not d={d}. Fix: write these vectors "
                                     "to another lake, or extract them with the model the table was made with.")
            return
        from deltalake.exceptions import CommitFailedError, DeltaError  # CommitFailedError is a DeltaError

        desc = json.dumps({"schema": spec.name, "schema_version": spec.version, "d": d, "vector_dtype": vector_dtype})
        try:
            with self._writing(name):
                write_deltalake(self.uri(name), schema.empty_table(), mode="error",
                                partition_by=list(spec.partition_by) or None, name=name, description=desc,
                                configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)},
                                storage_options=self.storage_options)
        except DeltaError as e:
            # two jobs starting on a fresh lake both create `runs`: the one that lost finds the table there and
            # checks its layout like any other caller
            lost_race = isinstance(e, CommitFailedError) or "already exists" in str(e)
            if not (lost_race and self.exists(name)):
                raise
            self.create(spec, name=name, d=d, vector_dtype=vector_dtype)

    def check_versions(self) -> None:
        """Refuse a lake whose tables an older nla wrote, before anything is written, naming the command that
        migrates it."""
        for name in self.names():
            spec = ALL.get(self.layout(name).get("schema", name))
            if spec is not None:
                self.arrow_schema(name, spec)

    # ---- writing ------------------------------------------------------------------------------------------------------
    def commit_shard(self, spec: TableSpec, rows: pa.Table, *, shard: str, run_id: str, recipe: str = "",
                     config_hash: str = "", name: str | None = None, source: dict[str, Any] | None = None,
                     ledger: bool = True) -> int:
        """Atomically replace the rows of unit `shard` made under `recipe` with `rows`, then record the unit in the
        ledger (unless ledger=False: rows that must be redone, such as failed AV batches, are written but not marked
        done). Rows of the same unit under other recipes stay. Returns the table version; rerunning never
        duplicates rows. `source` holds the ledger's name, path, fingerprint and size of the unit."""
        return self.commit_units(spec, [rows], units=[shard], run_id=run_id, recipe=recipe, config_hash=config_hash,
                                 name=name, sources={shard: source} if source else None, ledger=ledger)

    def commit_units(self, spec: TableSpec, batches: Sequence[pa.Table] | Callable[[], Iterable[pa.Table]], *,
                     units: Sequence[str], run_id: str, recipe: str = "", config_hash: str = "",
                     name: str | None = None, sources: dict[str, dict[str, Any]] | None = None,
                     ledger: bool = True) -> int:
        """commit_shard for several units in one atomic commit, their rows streamed: `batches` is a list of tables
        or a function returning a fresh iterator of them (a retried commit reads them again). A table that does not
        exist yet must be created first (lake.create) unless `batches` is a list. Every batch row must belong to one
        of `units` under `recipe`; the commit replaces exactly those units' rows of that recipe. While an object store
        does not answer, the commit waits (NLA_STORE_WAIT_S) and is tried again."""
        name = name or spec.name
        what = f"committing unit {units[0]}" if len(units) == 1 else f"committing {len(units)} units"
        return self._when_reachable(f"{what} to {name!r}", lambda: self._commit_units(
            spec, batches, units=units, run_id=run_id, recipe=recipe, config_hash=config_hash, name=name,
            sources=sources, ledger=ledger))

    def _commit_units(self, spec: TableSpec, batches: Sequence[pa.Table] | Callable[[], Iterable[pa.Table]], *,
                      units: Sequence[str], run_id: str, recipe: str, config_hash: str, name: str,
                      sources: dict[str, dict[str, Any]] | None, ledger: bool) -> int:
        from deltalake import write_deltalake

        assert spec.shard_column, f"{spec.name} is not sharded"
        table = self._open(name)
        if not callable(batches):
            if batches and table is None:
                self._ensure(spec, batches[0], name)
                table = self._open(name)
            listed = batches
            batches = lambda: listed  # noqa: E731
        table = table if table is not None else self.table(name)  # NLATableNotFound: create it first
        schema = self.arrow_schema(name, spec, table=table)
        wanted = set(units)
        counts: dict[str, int] = {}

        def checked() -> Iterator[pa.RecordBatch]:
            counts.clear()
            for rows in batches():
                batch = check_batch(spec, rows, schema)
                if not batch.num_rows:
                    continue
                if not pc.all(pc.equal(batch.column("recipe"), recipe)).as_py():
                    raise NLASchemaError(f"rows for {name!r} carry other recipe values than {recipe!r}. Fix: set "
                                         f"recipe = {recipe!r} on every row of the batch.")
                for unit, n in zip(*pc.value_counts(batch.column(spec.shard_column)).flatten()):
                    if unit.as_py() not in wanted:
                        raise NLASchemaError(f"rows for {name!r} carry other {spec.shard_column} values: "
                                             f"{unit.as_py()!r} is not a unit of this commit ({sorted(wanted)[:3]}). "
                                             f"Fix: set {spec.shard_column} to the unit the rows belong to.")
                    counts[unit.as_py()] = counts.get(unit.as_py(), 0) + n.as_py()
                yield from batch.to_batches()

        keys = ", ".join(f"'{_sql_str(u)}'" for u in units)
        predicate = f"{spec.shard_column} IN ({keys}) AND recipe = '{_sql_str(recipe)}'"
        refused: list[Exception] = []  # a batch refused mid-stream: raised as itself, not as Delta's wrapper

        def write(t: Any, props: Any) -> None:
            def stream() -> Iterator[pa.RecordBatch]:
                try:
                    yield from checked()
                except Exception as e:
                    refused.append(e)
                    raise
            refused.clear()
            try:
                write_deltalake(t, pa.RecordBatchReader.from_batches(schema, stream()), mode="overwrite",
                                predicate=predicate, commit_properties=props, writer_properties=writer_properties(schema))
            except Exception:
                if refused:
                    raise refused[0] from None
                raise

        version = self._retry(name, write, table=table,
            run_id=run_id, config_hash=config_hash, shard=units[0] if len(units) == 1 else f"{len(units)} units",
            recipe=recipe)
        if ledger:
            self.record_units(name, {u: counts.get(u, 0) for u in units}, recipe=recipe, run_id=run_id,
                              version=version, sources=sources)
        return version

    def record_shard(self, table_name: str, shard: str, *, recipe: str, run_id: str, rows: int, version: int,
                     source: dict[str, Any] | None = None) -> None:
        self.record_units(table_name, {shard: rows}, recipe=recipe, run_id=run_id, version=version,
                          sources={shard: source} if source else None)

    def record_units(self, table_name: str, rows: dict[str, int], *, recipe: str, run_id: str, version: int,
                     sources: dict[str, dict[str, Any]] | None = None) -> None:
        """Ledger the units (unit -> rows committed) in one merge."""
        c = SHARDS.col
        src = [(sources or {}).get(u) or {} for u in rows]
        n = len(rows)
        ledger = pa.table({c.table_name: [table_name] * n, c.shard: list(rows), c.recipe: [recipe] * n,
                           c.name: [s.get("name", u) for s, u in zip(src, rows)],
                           c.path: [s.get("path", "") for s in src], c.fingerprint: [s.get("fingerprint", "") for s in src],
                           c.size: [s.get("size") for s in src], c.run_id: [run_id] * n, c.rows: list(rows.values()),
                           c.table_version: [version] * n, c.committed_at: [now()] * n}, schema=arrow_schema(SHARDS))
        self.merge(SHARDS, ledger, run_id=run_id)

    def ledger(self, table_name: str | None = None) -> list[dict[str, Any]]:
        """The ledger's rows (without timestamps), optionally for one table. Small: one row per committed unit."""
        if (t := self._open(SHARDS.name)) is None:
            return []
        import pyarrow.dataset as pds

        self.arrow_schema(SHARDS.name, SHARDS, table=t)  # a ledger of another schema version is refused with the fix
        c = SHARDS.col
        cols = [c.table_name, c.shard, c.recipe, c.name, c.path, c.fingerprint, c.size, c.run_id, c.rows]
        flt = pds.field(c.table_name) == table_name if table_name else None
        return t.to_pyarrow_dataset().to_table(columns=cols, filter=flt).to_pylist()

    def committed_shards(self, table_name: str, recipe: str | None = None) -> set[str]:
        """Unit ids committed to `table_name` (under `recipe`, or any)."""
        return {r["shard"] for r in self.ledger(table_name) if recipe is None or r["recipe"] == recipe}

    def merge(self, spec: TableSpec, rows: pa.Table, *, run_id: str, name: str | None = None,
              config_hash: str = "") -> int:
        """Upsert rows on the table's key (runs, checkpoints, the shard ledger)."""
        name = name or spec.name
        return self._when_reachable(f"merging into {name!r}", lambda: self._merge(spec, rows, run_id=run_id,
                                                                                  name=name, config_hash=config_hash))

    def _merge(self, spec: TableSpec, rows: pa.Table, *, run_id: str, name: str, config_hash: str) -> int:
        if (table := self._open(name)) is None:
            self._ensure(spec, rows, name)
            table = self.table(name)
        batch = check_batch(spec, rows, self.arrow_schema(name, spec, table=table))
        on = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)

        def do(t: Any, props: Any) -> None:
            (t.merge(batch, predicate=on, source_alias="s", target_alias="t", commit_properties=props)
             .when_matched_update_all().when_not_matched_insert_all().execute())

        return self._retry(name, do, table=table, run_id=run_id, config_hash=config_hash)

    def overwrite(self, spec: TableSpec, batches: Iterable[pa.RecordBatch] | pa.Table, *, name: str, run_id: str,
                  d: int | None = None, config_hash: str = "", extra_metadata: dict[str, str] | None = None) -> int:
        """Replace the whole table with a stream of batches (a new Delta version: the old one stays readable)."""
        from deltalake import write_deltalake

        self.create(spec, name=name, d=d)
        schema = self.arrow_schema(name, spec)

        def checked() -> Iterable[pa.RecordBatch]:
            for b in (batches.to_batches() if isinstance(batches, pa.Table) else batches):
                yield from check_batch(spec, pa.Table.from_batches([b]), schema).to_batches()

        reader = pa.RecordBatchReader.from_batches(schema, checked())
        return self._retry(name, lambda t, props: write_deltalake(
            t, reader, mode="overwrite", commit_properties=props, writer_properties=writer_properties(schema)),
            run_id=run_id, config_hash=config_hash, **(extra_metadata or {}))

    def _ensure(self, spec: TableSpec, rows: pa.Table, name: str) -> None:
        if self.exists(name):
            return
        d = None
        if spec.has_vector:
            vcol = next(c.name for c in spec.columns if c.type == "vector")
            t = rows.schema.field(vcol).type if vcol in rows.schema.names else None
            if not isinstance(t, pa.FixedSizeListType):
                raise NLASchemaError(f"table {name!r}: column {vcol!r} must be a fixed-size list of float32, got {t}. "
                                     "Fix: build it with nla.lake.schema.vectors_to_arrow.")
            d = t.list_size
            self.create(spec, name=name, d=d, vector_dtype=vector_dtype_of(t))
            return
        self.create(spec, name=name, d=d)

    def _retry(self, name: str, write: Any, *, table: Any = None, **metadata: str) -> int:
        """Run a commit, `write(t, props)` through the DeltaTable t (`table`, else loaded here) with our metadata,
        and return the version it made; on a concurrent-commit conflict back off and retry on the table loaded
        again, at least COMMIT_RETRIES times and for at least COMMIT_RETRY_S (the write is idempotent: a predicate
        overwrite or a merge on the key)."""
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        props = CommitProperties(custom_metadata={k: str(v) for k, v in metadata.items() if v is not None})
        start, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            t = table if table is not None else self.table(name)
            try:
                with self._writing(name):
                    write(t, props)
                return t.version()
            except CommitFailedError as e:
                table = None  # the next try reads the table's newer versions
                waited = time.monotonic() - start
                if attempt >= COMMIT_RETRIES and waited >= COMMIT_RETRY_S:
                    raise NLACommitConflict(f"table {name!r}: {attempt} commits in a row lost to concurrent writers "
                                            f"over {waited:.0f} s ({str(e).splitlines()[0]}). Nothing was written. "
                                            "Fix: rerun when the other writers (a compaction?) are done; committed "
                                            "shards are skipped and this one is replaced, never duplicated.") from e
                self.conflicts += 1
                time.sleep(min(2.0, 0.05 * 2 ** min(attempt - 1, 6)) * (0.5 + random.random()))

    def _when_reachable(self, what: str, op: Callable[[], int]) -> int:
        """Run `op` (an idempotent write: a predicate overwrite or a merge on the key); while an object store does not
        answer, run it again with backoff until it does, for up to NLA_STORE_WAIT_S in all per outage."""
        from deltalake.exceptions import DeltaError

        attempt = 0
        while True:
            try:
                result = op()
            except (OSError, DeltaError) as e:
                if self.is_local or not storage.unreachable(e):
                    raise
                now_s = time.monotonic()
                if self._down_since is None:
                    self._down_since = now_s
                    if self.on_store_wait:
                        self.on_store_wait(f"lake {self.root}: the store does not answer ({storage.reason(e)}) while "
                                           f"{what}; retrying for up to {self.store_wait_s:.0f} s")
                waited = now_s - self._down_since
                if waited >= self.store_wait_s:
                    raise NLAStoreUnreachable(
                        f"lake {self.root}: the store did not answer for {waited:.0f} s while {what} "
                        f"({storage.reason(e)}). That unit is not recorded as done. Fix: check that the store "
                        "(AWS_ENDPOINT_URL) is up, or let writes wait longer with NLA_STORE_WAIT_S=SECONDS; then rerun "
                        "the same command: committed shards are skipped.") from e
                self.store_waits += 1
                time.sleep(min(5.0, 0.25 * 2 ** attempt))
                attempt += 1
                continue
            if self._down_since is not None and self.on_store_wait:
                self.on_store_wait(f"lake {self.root}: the store answers again after "
                                   f"{time.monotonic() - self._down_since:.0f} s; {what} went through")
            self._down_since = None
            return result

    def check_writable(self) -> None:
        """The lake root must take writes: a folder we can create files in, or a bucket prefix where one tiny object
        can be put and deleted (checked before a job does any work, so before any model loads)."""
        if not self.is_local:
            storage.probe_writable(self.root, self.storage_options)
            return
        root = Path(self.root).expanduser()
        # folders this probe creates are removed again: a run refused later must leave no lake behind
        created = [p for p in (root, *root.parents) if not p.exists()]
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".nla-write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            for folder in created:  # deepest first; rmdir removes only empty folders
                folder.rmdir()
        except OSError as e:
            raise NLALakeError(f"lake {self.root}: cannot write there ({e.strerror or e}). Fix: pass --lake (or "
                               "lake=) a folder this user can write to, on a disk with free space.") from e

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        """Turn a storage failure (no space, read-only, permission, not a folder) into one NLALakeError. A Delta
        commit is atomic, so a failed write leaves the table at its previous version."""
        from deltalake.exceptions import CommitFailedError, DeltaError  # CommitFailedError is a DeltaError

        try:
            yield
        except CommitFailedError:
            raise  # a concurrent writer won: _retry retries
        except (DeltaError, OSError) as e:
            text = str(e)
            reason = next((r for r in _STORAGE_REASONS if r.lower() in text.lower()), None)
            if reason is None:
                raise
            raise NLALakeError(f"table {name!r} in lake {self.root}: the write failed ({reason}). Nothing of it was "
                               "committed; the table keeps its previous version. Fix: free space or pick a writable "
                               "lake (--lake / lake=), then rerun: committed shards are skipped.") from e

    # ---- maintenance and history -------------------------------------------------------------------------------------
    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        return self.table(name).history(limit)

    def optimize(self, name: str, *, run_id: str = "optimize") -> dict[str, Any]:
        """Compact small files (per partition). Readers and time travel are unaffected. Beside a running job a
        compaction can lose a commit race; it is then retried on the newer version, like any other commit."""
        metrics: dict[str, Any] = {}

        def compact(t: Any, props: Any) -> None:
            metrics.update(t.optimize.compact(
                writer_properties=writer_properties(self.arrow_schema(name, table=t)), commit_properties=props))

        self._retry(name, compact, run_id=run_id)
        return metrics

    def vacuum(self, name: str, *, retention_hours: int = SAFE_RETENTION_HOURS, dry_run: bool = True) -> list[str]:
        """Delete files no version newer than `retention_hours` needs. Below the safe retention it refuses."""
        if retention_hours < SAFE_RETENTION_HOURS:
            raise NLALakeError(f"vacuum of {name!r} with retention {retention_hours}h would delete files that running "
                               f"readers and time travel still need (safe minimum {SAFE_RETENTION_HOURS}h). Fix: keep "
                               "the default, or compact with `optimize` instead.")
        return self.table(name).vacuum(retention_hours=retention_hours, dry_run=dry_run)

    def infos(self) -> list[TableInfo]:
        out = []
        for name in self.names():
            t = self.table(name)
            layout = self.layout(name)
            spec = layout.get("schema", name)
            actions = pa.table(t.get_add_actions(flatten=True))  # arro3 table -> pyarrow via the C data interface
            rows = int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0
            out.append(TableInfo(name=name, spec=spec, version=t.version(), rows=rows, d=layout.get("d"),
                                 schema=self.arrow_schema(name, ALL.get(spec))))
        return out


def writer_properties(schema: pa.Schema) -> Any:
    """Row groups of ~ROW_GROUP_BYTES for tables with a vector column (d from its fixed-size list)."""
    from deltalake import WriterProperties

    d = next((f.type.list_size for f in schema if isinstance(f.type, pa.FixedSizeListType)), None)
    return WriterProperties(max_row_group_size=max(1024, ROW_GROUP_BYTES // (4 * d))) if d else None


_STORAGE_REASONS = ("No space left on device", "Read-only file system", "Permission denied", "Not a directory",
                    "Disk quota exceeded")


def _sql_str(value: str) -> str:
    return value.replace("'", "''")
