"""Table declarations: the single source of column names and types for writers, readers, views and tests.

One file per table. nla/lake/schema.py builds pyarrow schemas from these; code refers to columns as
`EXPLANATIONS.col.mse`, never as scattered string literals.
"""

from nla.schemas.activations import ACTIVATIONS
from nla.schemas.checkpoints import CHECKPOINTS
from nla.schemas.explanations import EXPLANATIONS
from nla.schemas.runs import RUNS
from nla.schemas.shards import SHARDS
from nla.schemas.spec import Column, TableSpec
from nla.schemas.training_sets import TRAINING_SET

ALL = {t.name: t for t in (ACTIVATIONS, EXPLANATIONS, RUNS, SHARDS, TRAINING_SET, CHECKPOINTS)}

__all__ = ["ACTIVATIONS", "EXPLANATIONS", "RUNS", "SHARDS", "TRAINING_SET", "CHECKPOINTS", "ALL", "Column",
           "TableSpec"]
