"""`nla tables|query|search|mine` through the real CLI on a real lake."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.nla.lake.conftest import versions
from tests.nla.test_cli import run


def test_tables_and_query_formats(lake, tmp_path):
    root = lake.root
    out = run("tables", "--lake", root, "--schema").stdout
    assert "activations" in out and "fixed_size_list" in out and "120" in out
    out = run("query", "SELECT status, count(*) AS n FROM explanations GROUP BY status ORDER BY status",
              "--lake", root).stdout
    assert "no_tags" in out and "117" in out
    lines = run("query", "SELECT act_id, mse FROM labels ORDER BY mse DESC LIMIT 3", "--format", "json",
                "--lake", root).stdout.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["mse"] > 1.9
    csv = run("query", "SELECT act_id FROM labels LIMIT 2", "--format", "csv", "--lake", root).stdout
    assert csv.splitlines()[0] == '"act_id"'
    run("query", "SELECT * FROM features", "--format", "parquet", "--out", str(tmp_path / "f.parquet"),
        "--lake", root)
    assert pq.read_table(tmp_path / "f.parquet").num_rows == 234
    out = run("query", "SELECT count(*) AS n FROM activations", "--at", "activations=1", "--lake", root).stdout
    assert out.splitlines()[2].strip() == "40"


def test_search_and_mine(lake):
    out = run("search", "--keyword", "finance", "-k", "3", "--lake", lake.root).stdout
    assert out.count("finance") == 3
    out = run("mine", "--where", "mse > 1.8", "--name", "hard_cli", "--lake", lake.root).stdout
    assert "training_sets/hard_cli" in out


@pytest.mark.parametrize("args, match", [
    (["query", "COPY explanations TO '/tmp/x.csv'"], "refused"),
    (["query", "SELECT * FROM read_csv('/etc/passwd')"], "refused|cannot read"),
    (["query", "SELECT * FROM nothing_here"], "nothing_here"),
    (["query", "SELECT 1", "--format", "parquet"], "--out"),
    (["query", "SELECT 1", "--at", "explanations"], "TABLE=VERSION"),
    (["mine", "--where", "1=1; DELETE FROM explanations", "--name", "x"], "statements"),
    (["mine", "--where", "mse > 99", "--name", "hard_cli"], "no labeled activation matches it, so nothing was written"),
    (["search", "x", "-k", "0"], "-k"),
])
def test_bad_lake_input(lake, args, match):
    import re

    before = versions(lake)
    p = run(*args, "--lake", lake.root, check=False)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(match, lines[0]), p.stderr
    assert versions(lake) == before


def test_missing_lake_is_clear(tmp_path):
    p = run("query", "SELECT * FROM explanations", "--lake", str(tmp_path / "none"), check=False)
    assert p.returncode == 2 and str(tmp_path / "none") in p.stderr and "no such folder" in p.stderr
    assert "Fix:" in p.stderr and "Traceback" not in p.stderr


def test_index_then_search_matches_exact(toy_kit, tmp_path, capsys):
    from nla.checks import check_checkpoint
    from nla.lake.store import Lake
    from nla.schemas import ACTIVATIONS, EXPLANATIONS
    from tests.nla.lake.conftest import shard_rows

    d = check_checkpoint(toy_kit / "ar", "ar").d_model
    lake = Lake(tmp_path / "lake")
    for s in range(2):
        acts, expl = shard_rows(s, d=d)
        lake.commit_shard(ACTIVATIONS, acts, shard=f"s{s}", run_id="r1")
        lake.commit_shard(EXPLANATIONS, expl, shard=f"s{s}", run_id="r1")
    assert "covers activations version 2" in run("index", "--lake", lake.root).stdout
    search = ["search", "The text is about weather.", "--ar", str(toy_kit / "ar"), "-k", "5", "--lake", str(lake.root)]
    # the two JSON searches through `nla`'s entry point in this process (each `nla search` process loads torch and
    # the AR: ~4 CPU-s); the table through the real command below
    from tests.inprocess import nla

    def found(*args: str) -> list[dict]:
        code, out, err = nla(capsys, *search, *args)
        assert code == 0, out + err
        return [json.loads(x) for x in out.splitlines()]

    fast, exact = found("--format", "json"), found("--format", "json", "--exact")
    assert [r["act_id"] for r in fast] == [r["act_id"] for r in exact] and len({r["act_id"] for r in fast}) == 5
    assert {r["method"] for r in fast} == {"index"} and {r["method"] for r in exact} == {"exact"}
    table = run(*search).stdout
    assert "searched by index (activations version 2, 80 rows)" in table
