"""Mining hard examples into versioned training-set tables."""

from __future__ import annotations

import numpy as np
import pytest

from nla.errors import NLAInputError, NLAQueryError
from nla.lake.mine import mine
from nla.lake.query import LakeQuery
from nla.lake.schema import vectors_from_arrow
from tests.nla.lake.conftest import versions


def test_mine_writes_versioned_training_sets(lake):
    r = mine(lake, where="mse > 1.5 AND status = 'ok'", name="hard_v1")
    q = LakeQuery(lake)
    expected = q.run("SELECT count(*) n FROM labels WHERE mse > 1.5 AND status = 'ok'").column("n")[0].as_py()
    assert r.rows == expected > 0 and r.table == "training_sets/hard_v1" and r.version == 1
    t = lake.table(r.table).to_pyarrow_dataset(schema=lake.arrow_schema(r.table)).to_table()
    assert min(t.column("mse").to_pylist()) > 1.5
    assert set(t.column("mined_by").to_pylist()) == {r.run_id} and t.column("query")[0].as_py().startswith("mse")
    # vectors came along unchanged
    acts = lake.table("activations").to_pyarrow_dataset(schema=lake.arrow_schema("activations")).to_table()
    by_id = dict(zip(acts.column("act_id").to_pylist(), vectors_from_arrow(acts.column("vector"))))
    v = vectors_from_arrow(t.column("vector"))
    np.testing.assert_array_equal(v[0], by_id[t.column("act_id")[0].as_py()])
    run = q.run(f"SELECT status, counts FROM runs WHERE run_id = '{r.run_id}'").to_pylist()
    assert run[0]["status"] == "ok"

    r2 = mine(lake, where="mse > 1.0", name="hard_v1", limit=5)
    assert (r2.version, r2.rows) == (2, 5)
    assert lake.table(r.table, version=1).to_pyarrow_dataset().count_rows() == r.rows  # old version readable
    hardest = lake.table(r.table).to_pyarrow_dataset().to_table().column("mse").to_pylist()
    assert min(hardest) >= 1.8  # hardest first


@pytest.mark.parametrize("where, name, err, match", [
    ("mse > 1; DROP VIEW labels", "x", NLAQueryError, "statements"),
    ("msee > 1", "x", NLAQueryError, "column"),
    ("mse > 1", "../../etc", NLAInputError, "--name"),
    ("mse >", "x", NLAQueryError, "parse"),
])
def test_bad_mining_requests(lake, where, name, err, match):
    before = versions(lake)
    with pytest.raises(err, match=match):
        mine(lake, where=where, name=name)
    assert versions(lake) == before
