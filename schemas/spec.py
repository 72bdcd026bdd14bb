"""The declaration types every table in schemas/ uses: plain data, no pyarrow (nla/lake/schema.py builds those).

A column type is one of: string, int32, int64, float32, float64, bool, timestamp, json (a string holding JSON),
list<int64>, list<string>, vector (a fixed-size list of d floats; d and float32|float16 are fixed per table when it
is created and kept in the table's metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

TYPES = ("string", "int32", "int64", "float32", "float64", "bool", "timestamp", "json", "list<int64>",
         "list<string>", "vector")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    doc: str
    nullable: bool = True

    def __post_init__(self) -> None:
        assert self.type in TYPES, f"column {self.name}: unknown type {self.type!r}; known: {TYPES}"


@dataclass(frozen=True)
class TableSpec:
    name: str  # the table's folder under the lake root
    version: int  # bumped on any column change; stored in the table's metadata and checked on write
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # a row's identity: merges and duplicate checks use it
    shard_column: str | None = None  # per-shard atomic commits replace the rows of one value of this column
    partition_by: tuple[str, ...] = ()
    col: SimpleNamespace = field(init=False, repr=False, compare=False)  # TABLE.col.mse == "mse", typos fail loudly

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        assert len(set(names)) == len(names), f"{self.name}: duplicate column names"
        for k in (*self.key, *self.partition_by, *([self.shard_column] if self.shard_column else [])):
            assert k in names, f"{self.name}: {k!r} is not a column"
        object.__setattr__(self, "col", SimpleNamespace(**{n: n for n in names}))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def has_vector(self) -> bool:
        return any(c.type == "vector" for c in self.columns)
