"""runs: one row per job run: what ran, with which config and code, and what it produced."""

from nla.schemas.spec import Column, TableSpec

RUNS = TableSpec(
    name="runs", version=2,
    doc="The ledger of job runs. Every row of every other table carries a run_id found here.",
    columns=(
        Column("run_id", "string", "unique run id", nullable=False),
        Column("job", "string", "extract | label | mine | train-sft | train-grpo | ..."),
        Column("config", "json", "the resolved config"),
        Column("config_hash", "string", "sha256 of the resolved config (commit metadata carries it too)"),
        Column("code_version", "string", "nla version and git commit when known"),
        Column("started_at", "timestamp", "UTC start"),
        Column("finished_at", "timestamp", "UTC end (null while running)"),
        Column("status", "string", "running | ok | failed | interrupted | empty"),
        Column("recipes", "json", "the recipes the run wrote under: {table: {hash, fields}}"),
        Column("counts", "json", "rows in/out, failures, per table"),
        Column("throughput", "json", "rows/s per stage and summary metrics"),
    ),
    key=("run_id",),
)
