"""activations: one row per (base model, layer, document, position): the raw residual-stream vector at block K."""

from schemas.spec import Column, TableSpec

ACTIVATIONS = TableSpec(
    name="activations", version=2,
    doc="Raw block-K activations with where they came from. Written by `nla extract` / `nla label`.",
    columns=(
        Column("act_id", "string", "stable hash of (base_model, layer, doc_id, position)", nullable=False),
        Column("base_model", "string", "base checkpoint id or path the vector was extracted with"),
        Column("layer", "int32", "K: the vector is the output of block K (= HF hidden_states[K+1])"),
        Column("doc_id", "string", "document id (a content hash when the corpus gives none)"),
        Column("position", "int32", "token position in the document (BOS = 0)"),
        Column("token_id", "int64", "token id at that position"),
        Column("token", "string", "the token's text"),
        Column("context", "string", "detokenised prefix ending at the token (truncated from the left)"),
        Column("vector", "vector", "raw activation, not normalised", nullable=False),
        Column("norm", "float32", "L2 norm of the vector"),
        Column("shard", "string", "the input shard's unit id (name@content fingerprint) the row came from"),
        Column("recipe", "string", "hash of the extraction recipe that made the row (base content, layer, settings); "
               "runs.recipes holds its fields"),
        Column("run_id", "string", "the run that wrote the row"),
    ),
    key=("act_id",), shard_column="shard", partition_by=("shard",),
)
