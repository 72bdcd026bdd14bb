"""shards: which unit of work (an input shard's content under one recipe) each table holds, and which run wrote it.

A rerun skips a unit only when the same content (fingerprint) was committed under the same recipe; another recipe
or other content is new work. Version 1 ledgers (a shard known by its file name alone) are migrated by `nla migrate`.
"""

from nla.schemas.spec import Column, TableSpec

SHARDS = TableSpec(
    name="shards", version=2,
    doc="Shard ledger: one row per (table, unit, recipe) once that unit's rows are committed.",
    columns=(
        Column("table_name", "string", "the table the shard was committed to", nullable=False),
        Column("shard", "string", "unit id: name@fingerprint (the value of the data tables' shard column)",
               nullable=False),
        Column("recipe", "string", "hash of the recipe the rows were made with ('legacy' for migrated v1 rows)",
               nullable=False),
        Column("name", "string", "the shard's path relative to the input root (or the activations' unit id)"),
        Column("path", "string", "the shard's absolute path or URI when it was committed"),
        Column("fingerprint", "string", "streamed sha256 of the shard's bytes ('' for migrated v1 rows)"),
        Column("size", "int64", "the shard's size in bytes (null when the source gives none)"),
        Column("run_id", "string", "the run that committed it"),
        Column("rows", "int64", "rows committed for the shard"),
        Column("table_version", "int64", "the table's Delta version after the commit"),
        Column("committed_at", "timestamp", "UTC time of the commit"),
    ),
    key=("table_name", "shard", "recipe"),
)
