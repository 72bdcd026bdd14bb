"""checkpoints: the registry of AV/AR checkpoints the lake's rows refer to."""

from nla.schemas.spec import Column, TableSpec

CHECKPOINTS = TableSpec(
    name="checkpoints", version=1,
    doc="Checkpoint registry: id, role, lineage, stage, metrics and where the folder lives.",
    columns=(
        Column("checkpoint_id", "string", "id used in explanations.av / explanations.ar", nullable=False),
        Column("role", "string", "av | ar"),
        Column("parent", "string", "checkpoint it was trained from"),
        Column("stage", "string", "init | sl | rl"),
        Column("metrics", "json", "evaluation figures"),
        Column("path", "string", "folder or URI of the HF checkpoint + nla_meta.yaml"),
        Column("run_id", "string", "run that produced it"),
        Column("created_at", "timestamp", "UTC time it was registered"),
    ),
    key=("checkpoint_id",),
)
