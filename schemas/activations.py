"""activations: one row per vector to explain: a residual-stream activation at block K that extraction wrote (source
`corpus`), or a vector `nla import` brought in (an SAE decoder row, a steering vector, a probe direction: source
`sae:<name>`, `file:<name>`), with its optional label and metadata carried through."""

from nla.schemas.spec import Column, TableSpec

ACTIVATIONS = TableSpec(
    name="activations", version=3,
    doc="Raw block-K activations with where they came from. Written by `nla extract` / `nla label` and `nla import`.",
    columns=(
        Column("act_id", "string", "stable hash of (base_model, layer, doc_id, position)", nullable=False),
        Column("base_model", "string", "base checkpoint id or path the vector was extracted with"),
        Column("layer", "int32", "K: the vector is the output of block K (= HF hidden_states[K+1])"),
        Column("doc_id", "string", "document id (a content hash when the corpus gives none)"),
        Column("position", "int32", "token position in the document (BOS = 0); for imported vectors the row index in "
               "the file (an SAE's latent index)"),
        Column("token_id", "int64", "token id at that position (null for imported vectors)"),
        Column("token", "string", "the token's text"),
        Column("context", "string", "detokenised prefix ending at the token (truncated from the left)"),
        Column("vector", "vector", "raw activation, not normalised", nullable=False),
        Column("norm", "float32", "L2 norm of the vector"),
        Column("shard", "string", "the input shard's unit id (name@content fingerprint) the row came from"),
        Column("recipe", "string", "hash of the extraction recipe that made the row (base content, layer, settings); "
               "runs.recipes holds its fields"),
        Column("source", "string", "where the vector came from: corpus (extracted by nla), sae:<name>, file:<name>"),
        Column("label", "string", "the label an imported vector came with (null when none)"),
        Column("meta", "json", "an imported vector's metadata columns as a JSON object (null when none)"),
        Column("run_id", "string", "the run that wrote the row"),
    ),
    key=("act_id",), shard_column="shard", partition_by=("shard",),
)
