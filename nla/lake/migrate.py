"""Upgrade a lake written by an older nla to this schema, in place: one atomic commit per table, resumable.

Version 1 knew a shard by its file name and rows by no recipe. Migrated rows get recipe 'legacy', ledger rows keep
their name as unit id with no fingerprint, and runs get no recipes. Version 2 had no vector sources and no quality
flags: its activations get source 'corpus' (extraction wrote every one), its explanations the flags their own text
and status give (truncated, no_tags, degenerate; template and low_norm are set by the next labeling run of their
recipe, or `nla quality --refresh`). A table several versions behind takes every step in one rewrite. Each table is rewritten (streamed, bounded
memory) as one Delta overwrite that also changes its schema, then its recorded schema version is updated; a table
whose columns are already new only gets the version, so a migration killed anywhere is finished by running it
again. Old versions stay readable by time travel until vacuumed. Nothing else here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from nla.lake.rows import CORPUS
from nla.lake.schema import arrow_schema
from nla.lake.store import Lake, writer_properties
from nla.quality.flags import row_flags
from nla.schemas import ACTIVATIONS, EXPLANATIONS, RUNS, SHARDS, TableSpec

LEGACY_RECIPE = "legacy"  # rows and ledger entries written before recipes existed

# how a v1 batch becomes the columns of a v2 batch
Upgrade = Callable[[pa.RecordBatch], dict[str, Any]]


def _add(**cols: Callable[[pa.RecordBatch], Any]) -> Upgrade:
    def up(b: pa.RecordBatch) -> dict[str, Any]:
        return {**{n: b.column(n) for n in b.schema.names}, **{k: f(b) for k, f in cols.items()}}
    return up


def _legacy(b: pa.RecordBatch) -> pa.Array:
    return pa.array([LEGACY_RECIPE] * b.num_rows, pa.string())


def _flags(b: pa.RecordBatch) -> pa.Array:
    E = EXPLANATIONS.col
    cols = (b.column(E.explanation).to_pylist(), b.column(E.raw_output).to_pylist(), b.column(E.status).to_pylist())
    return pa.array([row_flags(e, r, s) for e, r, s in zip(*cols)], pa.list_(pa.string()))


def _nulls(b: pa.RecordBatch) -> pa.Array:
    return pa.nulls(b.num_rows, pa.string())


# table -> (its spec now, the steps from each older version to the next)
UPGRADES: dict[str, tuple[TableSpec, dict[int, Upgrade]]] = {
    ACTIVATIONS.name: (ACTIVATIONS, {1: _add(recipe=_legacy), 2: _add(
        source=lambda b: pa.array([CORPUS] * b.num_rows, pa.string()), label=_nulls, meta=_nulls)}),
    EXPLANATIONS.name: (EXPLANATIONS, {1: _add(recipe=_legacy), 2: _add(flags=_flags)}),
    SHARDS.name: (SHARDS, {1: _add(recipe=_legacy, name=lambda b: b.column(SHARDS.col.shard),
                                   path=lambda b: pa.array([""] * b.num_rows, pa.string()),
                                   fingerprint=lambda b: pa.array([""] * b.num_rows, pa.string()),
                                   size=lambda b: pa.nulls(b.num_rows, pa.int64()))}),
    RUNS.name: (RUNS, {1: _add(recipes=_nulls)}),
}


def _steps(steps: dict[int, Upgrade], version: int) -> Upgrade:
    """The upgrades from `version` to now, chained: each step sees the batch the previous one made."""
    def up(b: pa.RecordBatch) -> dict[str, Any]:
        for v in sorted(k for k in steps if k >= version):
            cols = steps[v](b)
            b = pa.RecordBatch.from_arrays([pa.array(c) if isinstance(c, list) else c for c in cols.values()],
                                           names=list(cols))
        return {n: b.column(n) for n in b.schema.names}
    return up


def pending(lake: Lake) -> dict[str, int]:
    """Tables of this lake at an older schema version: {name: version}."""
    out = {}
    for name, (spec, _) in UPGRADES.items():
        if lake.exists(name):
            v = lake.layout(name).get("schema_version", 1)
            if v != spec.version:
                out[name] = v
    return out


def migrate(lake: Lake, *, log: Callable[[str], None] = print) -> list[str]:
    """Upgrade every table that needs it; returns the tables changed ([] when the lake was current)."""
    import json

    from deltalake import write_deltalake

    done = []
    for name, version in pending(lake).items():
        spec, steps = UPGRADES[name]
        if version not in steps:
            from nla.errors import NLASchemaError

            raise NLASchemaError(f"lake {lake.root}: table {name!r} has schema version {version}, which this nla "
                                 f"cannot migrate (it knows {sorted(steps)} -> {spec.version}). Fix: use the nla "
                                 "version that wrote it.")
        upgrade = _steps(steps, version)
        layout = lake.layout(name)
        schema = arrow_schema(spec, d=layout.get("d"), vector_dtype=layout.get("vector_dtype", "float32"))
        table = lake.table(name)
        if set(pa.schema(table.schema()).names) != set(schema.names):  # not yet rewritten (else: only the version)
            rows = table.to_pyarrow_dataset()
            n = rows.count_rows()

            def batches() -> Iterator[pa.RecordBatch]:
                for b in rows.to_batches(batch_size=16_384):
                    cols = upgrade(b)
                    yield pa.RecordBatch.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)

            write_deltalake(lake.uri(name), pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite",
                            schema_mode="overwrite", partition_by=list(spec.partition_by) or None,
                            writer_properties=writer_properties(schema), storage_options=lake.storage_options)
            log(f"[migrate] {name}: {n} rows rewritten at schema v{spec.version}")
        lake.table(name).alter.set_table_description(json.dumps({**layout, "schema_version": spec.version}))
        done.append(name)
    return done
