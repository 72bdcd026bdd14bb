"""DuckDB over the lake: views, features, search, time travel, pushdown, the read-only sandbox, timeouts."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from nla.errors import NLAInputError, NLAQueryError
from nla.lake.query import LakeQuery
from nla.lake.schema import vectors_from_arrow
from nla.schemas import ACTIVATIONS
from tests.nla.lake.conftest import shard_rows, versions


def test_views_and_features(lake):
    q = LakeQuery(lake)
    assert q.run("SELECT count(*) n FROM labels").column("n")[0].as_py() == 120
    row = q.run("SELECT * FROM labels WHERE status = 'ok' LIMIT 1").to_pylist()[0]
    assert row["context"].startswith("context") and row["position"] >= 10
    feats = q.run("SELECT rank, feature FROM features WHERE act_id = (SELECT act_id FROM labels WHERE status='ok' "
                  "ORDER BY act_id LIMIT 1) ORDER BY rank").to_pylist()
    assert [f["rank"] for f in feats] == [1, 2] and feats[0]["feature"].startswith("The text is about")
    top = q.run("SELECT feature, count(*) n FROM features WHERE rank = 1 GROUP BY 1 ORDER BY n DESC").to_pylist()
    assert len(top) == 4 and sum(t["n"] for t in top) == 117  # 3 no_tags rows have no features


def test_keyword_regex_and_sql_macros(lake):
    q = LakeQuery(lake)
    assert {r["explanation"].split(".")[0] for r in q.keyword("WEATHER|music", limit=100).to_pylist()} == \
        {"The text is about weather", "The text is about music"}
    assert q.run("SELECT count(*) n FROM search_features('^The text is about finance')").column("n")[0].as_py() == 30
    with pytest.raises(NLAInputError, match="regex"):
        q.keyword("(unclosed")


def test_nearest_finds_the_vector(lake):
    q = LakeQuery(lake)
    acts = lake.table("activations").to_pyarrow_dataset(schema=lake.arrow_schema("activations")).to_table()
    v = vectors_from_arrow(acts.column("vector"))
    target = acts.column("act_id")[7].as_py()
    got = q.nearest(v[7] * 3.0, k=3).to_pylist()
    assert got[0]["act_id"] == target and got[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    sql_top = q.run(f"SELECT act_id FROM nearest({v[7].tolist()}::FLOAT[16], 1)").to_pylist()
    assert sql_top[0]["act_id"] == target
    with pytest.raises(NLAInputError, match="d=8"):
        q.nearest(np.ones(8))


def test_time_travel_in_queries(lake):
    q = LakeQuery(lake, versions={"activations": 1})
    assert q.run("SELECT count(*) n FROM activations").column("n")[0].as_py() == 40
    with pytest.raises(NLAQueryError, match="no such table"):
        LakeQuery(lake, versions={"nope": 1})


def bytes_read() -> int:
    """Bytes this process has read from files so far (Linux I/O accounting, every thread: DuckDB's and Arrow's)."""
    with open("/proc/self/io") as f:
        return int(next(line.split()[1] for line in f if line.startswith("rchar:")))


def test_projection_pushdown_skips_vectors(lake):
    """Through the production read path (LakeQuery as `nla query` builds it, Arrow's local filesystem), counted by
    the kernel: a query that does not select `vector` reads none of its bytes, one that does reads all of them."""
    import pyarrow.parquet as pq

    lake.commit_shard(ACTIVATIONS, shard_rows(9, n=20_000)[0], shard="s9", run_id="r")  # vectors dominate the bytes
    files = lake.table("activations").file_uris()
    vector_bytes = sum(md.row_group(g).column(c).total_compressed_size for md in (pq.read_metadata(f) for f in files)
                       for g in range(md.num_row_groups) for c in range(md.num_columns)
                       if md.row_group(g).column(c).path_in_schema.startswith("vector."))
    other_bytes = sum(os.path.getsize(f) for f in files) - vector_bytes  # every byte but the vector column's
    q = LakeQuery(lake)

    def bytes_for(sql: str) -> int:
        before = bytes_read()
        q.run(sql)
        return bytes_read() - before

    bytes_for("SELECT * FROM activations")  # the first scan reads the footers once
    without = bytes_for("SELECT count(*), avg(norm) FROM activations WHERE position = 11")
    with_vec = bytes_for("SELECT avg(vector[1]) FROM activations WHERE position = 11")
    print({"without_vector": without, "with_vector": with_vec, "vector_column": vector_bytes})
    assert vector_bytes > other_bytes  # so a scan that read the vectors could not pass as one that did not
    assert 0 < without <= other_bytes and with_vec >= vector_bytes, (without, with_vec, vector_bytes, other_bytes)


READ_ONLY = "statements are refused: the lake is read-only here"
NO_FILES = r"refused: Permission Error: Cannot access file \"{}\" - file system operations are disabled"


@pytest.mark.parametrize("sql, why", [  # each escape is refused for its own reason, named in the message
    ("COPY (SELECT 1) TO '/tmp/nla_escape.csv'", f"^COPY {READ_ONLY}"),
    ("COPY explanations TO '/tmp/nla_escape.parquet' (FORMAT parquet)", f"^COPY {READ_ONLY}"),
    ("ATTACH '/tmp/nla_escape.db' AS x", f"^ATTACH {READ_ONLY}"),
    ("INSTALL httpfs", f"^LOAD {READ_ONLY}"),  # DuckDB parses INSTALL as a LOAD statement
    ("LOAD httpfs", f"^LOAD {READ_ONLY}"),
    ("SELECT * FROM read_csv('/etc/passwd')", NO_FILES.format("/etc/passwd")),
    ("SELECT * FROM read_text('/etc/hostname')", NO_FILES.format("/etc/hostname")),
    ("SELECT * FROM '/etc/passwd'", "Table with name /etc/passwd does not exist!. Tables here: activations"),
    ("SELECT * FROM glob('/etc/*')", NO_FILES.format(r"/etc/\*")),
    ("PRAGMA database_list", f"^PRAGMA {READ_ONLY}"),
    ("SET threads = 1", f"^SET {READ_ONLY}"),
    ("SELECT 1; DROP VIEW labels", "^2 statements given; the lake answers exactly one read-only SELECT"),
    ("CREATE TABLE x AS SELECT 1", f"^CREATE {READ_ONLY}"),
    ("INSERT INTO explanations SELECT * FROM explanations", f"^INSERT {READ_ONLY}"),
    ("DELETE FROM explanations", f"^DELETE {READ_ONLY}"),
    ("DROP VIEW labels", f"^DROP {READ_ONLY}"),
    ("EXPORT DATABASE '/tmp/nla_export'", f"^EXPORT {READ_ONLY}"),
    ("SELECT * FROM query('DROP VIEW labels')", "^SQL does not parse: Parser Error: Expected a single SELECT statement"
                                                r"\. Fix: write one read-only SELECT"),
    ("SELECT " + "1 + " * 6000 + "1", "^query of 24008 characters is over the 20000 limit. Fix: shorten it"),
    ("", "^empty query. Fix: pass one SELECT"),
])
def test_sandbox_refuses(lake, sql, why):
    before = versions(lake)
    q = LakeQuery(lake)
    with pytest.raises(NLAQueryError, match=why):
        q.run(sql)
    assert q.run("SELECT count(*) n FROM labels").column("n")[0].as_py() == 120  # views intact
    assert versions(lake) == before


def test_unknown_table_and_column(lake):
    q = LakeQuery(lake)
    with pytest.raises(NLAQueryError, match="Tables here: activations"):
        q.run("SELECT * FROM explanation")
    with pytest.raises(NLAQueryError, match="column"):
        q.run("SELECT msee FROM explanations")


def test_runaway_query_is_cut_off(lake):
    q = LakeQuery(lake, timeout_s=0.5)
    t = threading.Timer(10, q.con.interrupt)  # safety net only
    t.start()
    try:
        with pytest.raises(NLAQueryError, match="cut off"):
            q.run("SELECT count(*) FROM range(100000000) a, range(100000000) b")
    finally:
        t.cancel()
    assert q.run("SELECT 1 AS x").column("x")[0].as_py() == 1  # still usable
