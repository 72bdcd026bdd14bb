"""explanations: every AV sample for an activation, with its AR reconstruction score."""

from nla.schemas.spec import Column, TableSpec

EXPLANATIONS = TableSpec(
    name="explanations", version=3,
    doc="AV explanations and AR scores; one row per (act_id, av, ar, recipe, sample): another AV, AR or sampling adds rows beside the old ones. Failed samples are kept with a status.",
    columns=(
        Column("act_id", "string", "the activation explained (activations.act_id)", nullable=False),
        Column("av", "string", "AV checkpoint id", nullable=False),
        Column("ar", "string", "AR checkpoint id ('' when unscored)", nullable=False),
        Column("sample", "int32", "sample index 0..k-1 for this activation", nullable=False),
        Column("explanation", "string", "text inside <explanation> tags; null unless status = ok"),
        Column("raw_output", "string", "the AV's whole output"),
        Column("n_tokens", "int32", "generated tokens"),
        Column("status", "string", "ok | no_tags | truncated | error"),
        Column("mse", "float32", "mse_nrm = 2(1 - cos) of the AR reconstruction; null unless scored"),
        Column("cos", "float32", "cosine of the AR reconstruction and the activation"),
        Column("flags", "list<string>", "what looks wrong with this explanation, empty when clean: template, "
               "degenerate, low_norm, truncated, no_tags (nla/quality/flags.py, docs/quality.md)"),
        Column("shard", "string", "the unit id of the activations' shard the row came from"),
        Column("recipe", "string", "hash of the labeling recipe (AV, AR and sidecar content, sampling settings); "
               "runs.recipes holds its fields"),
        Column("run_id", "string", "the run that wrote the row"),
        Column("created_at", "timestamp", "UTC time the row was written"),
    ),
    key=("act_id", "av", "ar", "recipe", "sample"), shard_column="shard", partition_by=("shard",),
)
