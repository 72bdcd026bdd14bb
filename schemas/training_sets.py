"""training sets: examples mined from the lake for retraining, one Delta table per set name (versions = Delta's)."""

from nla.schemas.spec import Column, TableSpec

TRAINING_SET = TableSpec(
    name="training_sets", version=1,
    doc="Mined examples (vector + explanation + scores + provenance). Stored at training_sets/<name>.",
    columns=(
        Column("act_id", "string", "the activation", nullable=False),
        Column("vector", "vector", "raw activation", nullable=False),
        Column("explanation", "string", "the explanation it was mined with"),
        Column("av", "string", "AV that wrote the explanation"),
        Column("ar", "string", "AR that scored it"),
        Column("sample", "int32", "sample index"),
        Column("mse", "float32", "mse_nrm when mined"),
        Column("cos", "float32", "cos when mined"),
        Column("context", "string", "text prefix of the activation (for teacher relabeling)"),
        Column("source_run_id", "string", "run that wrote the explanation"),
        Column("mined_by", "string", "run_id of the mining run"),
        Column("query", "string", "the filter the example was mined with"),
    ),
    key=("act_id", "av", "ar", "sample"),
)
