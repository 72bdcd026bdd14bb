"""Lake fixtures: small synthetic lakes with known content, and one labeled by the real toy kit."""

from __future__ import annotations

import numpy as np
import pytest

from nla.av import Generation
from nla.lake.rows import activation_table, explanation_table, generation_columns
from nla.lake.store import Lake
from nla.schemas import ACTIVATIONS, EXPLANATIONS

D = 16
TOPICS = ("weather", "music", "finance", "health")


def shard_rows(s: int, n: int = 40, d: int = D, seed: int = 0):
    rng = np.random.default_rng(seed + s)
    cols = dict(doc_id=[f"d{s}-{i // 4}" for i in range(n)], position=[10 + i % 4 for i in range(n)],
                token_id=np.arange(n), token=[" tok"] * n, context=[f"context {s} {i}" for i in range(n)],
                vector=rng.standard_normal((n, d)).astype(np.float32))
    acts = activation_table(cols, base_model="toy", layer=1, shard=f"s{s}", run_id="r1")
    gens = [Generation(explanation=f"The text is about {TOPICS[i % 4]}.\n\nIt ends with tok {i}.",
                       raw_output="<explanation>...</explanation>", status="ok", n_tokens=12) for i in range(n)]
    gens[0] = Generation(explanation=None, raw_output="garbage", status="no_tags", n_tokens=200)
    mse = np.linspace(0.05, 1.95, n)
    expl = explanation_table(acts.column("act_id").to_pylist(), **generation_columns(gens), av="toy-av",
                             ar="toy-ar", samples=[0] * n,
                             shard=f"s{s}", run_id="r1", mse=mse, cos=1 - mse / 2)
    return acts, expl


@pytest.fixture
def lake(tmp_path) -> Lake:
    lk = Lake(tmp_path / "lake")
    for s in range(3):
        acts, expl = shard_rows(s)
        lk.commit_shard(ACTIVATIONS, acts, shard=f"s{s}", run_id="r1", config_hash="cfg1")
        lk.commit_shard(EXPLANATIONS, expl, shard=f"s{s}", run_id="r1", config_hash="cfg1")
    return lk


def versions(lk: Lake) -> dict[str, int]:
    return {n: lk.table(n).version() for n in lk.names()}
