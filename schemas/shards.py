"""shards: which input shard of which table was committed by which run (reruns skip what is here)."""

from schemas.spec import Column, TableSpec

SHARDS = TableSpec(
    name="shards", version=1,
    doc="Shard ledger: one row per (table, shard) once that shard's rows are committed.",
    columns=(
        Column("table_name", "string", "the table the shard was committed to", nullable=False),
        Column("shard", "string", "the input shard id", nullable=False),
        Column("run_id", "string", "the run that committed it"),
        Column("rows", "int64", "rows committed for the shard"),
        Column("table_version", "int64", "the table's Delta version after the commit"),
        Column("committed_at", "timestamp", "UTC time of the commit"),
    ),
    key=("table_name", "shard"),
)
