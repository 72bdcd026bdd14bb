"""Escapes from the read-only SQL path, tried through LakeQuery (what `nla query` runs) and through HTTP /v1/query:
files written or read outside the lake, extensions, settings, DDL/DML, several statements, very long queries and a
query that never ends. Each must be refused with a one-line error (or cut off by the timeout), write nothing, and
leave every table at its version."""

from __future__ import annotations

import re

import pytest

from nla.errors import NLAQueryError
from tests.reliability.conftest import report

PASSWD = "root:x:0:0"  # what /etc/passwd would give away

RO = "statements are refused: the lake is read-only here"  # the statement's kind comes first
NO_FILE = r'^refused: Permission Error: Cannot access file "{}" - file system operations are disabled by configuration'

ATTEMPTS = [  # (what, SQL, the refusal's reason); {out} is a folder that must stay empty, {lake} the lake root
    ("COPY a table to a file", "COPY explanations TO '{out}/copy.csv'", f"^COPY {RO}"),
    ("COPY a query to parquet", "COPY (SELECT * FROM activations) TO '{out}/acts.parquet' (FORMAT parquet)",
     f"^COPY {RO}"),
    ("EXPORT DATABASE", "EXPORT DATABASE '{out}/export'", f"^EXPORT {RO}"),
    ("ATTACH a database file", "ATTACH '{out}/x.duckdb' AS x", f"^ATTACH {RO}"),
    ("INSTALL an extension", "INSTALL httpfs", f"^LOAD {RO}"),  # DuckDB parses INSTALL as a LOAD statement
    ("LOAD an extension file", "LOAD '{out}/evil.duckdb_extension'", f"^LOAD {RO}"),
    ("an extension's reader (auto-load)", "SELECT * FROM read_xlsx('/etc/passwd')",
     '^Table Function with name "read_xlsx" is not in the catalog, but it exists in the excel extension'),
    ("read_csv on /etc/passwd", "SELECT * FROM read_csv('/etc/passwd')", NO_FILE.format("/etc/passwd")),
    ("read_text on /etc/passwd", "SELECT content FROM read_text('/etc/passwd')", NO_FILE.format("/etc/passwd")),
    ("read_blob inside a CTE", "WITH x AS (SELECT * FROM read_blob('/etc/hostname')) SELECT * FROM x",
     NO_FILE.format("/etc/hostname")),
    ("glob over /etc", "SELECT * FROM glob('/etc/*')", NO_FILE.format(r"/etc/\*")),
    ("a file path as a table", "SELECT * FROM '/etc/passwd'",
     "^Catalog Error: Table with name /etc/passwd does not exist!. Tables here:"),
    ("read_parquet on the lake's own files", "SELECT count(*) FROM read_parquet('{lake}/explanations/*/*.parquet')",
     NO_FILE.format("LAKE/explanations/\\*/\\*\\.parquet")),
    ("query() around a file reader", "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
     NO_FILE.format("/etc/passwd")),
    ("query() around COPY", "SELECT * FROM query('COPY explanations TO ''{out}/q.csv''')",
     r"^SQL does not parse: Parser Error: Expected a single SELECT statement\. Fix:"),
    ("PRAGMA", "PRAGMA database_list", f"^PRAGMA {RO}"),
    ("SET external access back on", "SET enable_external_access = true", f"^SET {RO}"),
    ("RESET the configuration lock", "RESET lock_configuration", f"^SET {RO}"),
    ("SELECT then COPY", "SELECT 1; COPY explanations TO '{out}/two.csv'",
     "^2 statements given; the lake answers exactly one read-only SELECT per query"),
    ("COPY behind a comment", "-- just a comment\nCOPY explanations TO '{out}/comment.csv'", f"^COPY {RO}"),
    ("DROP a view", "DROP VIEW labels", f"^DROP {RO}"),
    ("CREATE TABLE AS", "CREATE TABLE t AS SELECT * FROM explanations", f"^CREATE {RO}"),
    ("DELETE rows", "DELETE FROM explanations", f"^DELETE {RO}"),
    ("CHECKPOINT", "CHECKPOINT", f"^CALL {RO}"),  # DuckDB parses CHECKPOINT as a CALL
    ("a 30,000-character query", "SELECT " + "1+" * 15_000 + "1", "^query of 30008 characters is over the 20000 limit"),
    ("a query that never ends", "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b",
     r"^query cut off after 2s\. Fix:"),
]


def versions(lake) -> dict[str, int]:
    from nla.lake.store import Lake

    lk = Lake(lake)
    return {n: lk.table(n).version() for n in lk.names()}


@pytest.mark.parametrize("path", ["LakeQuery", "HTTP /v1/query"])
def test_sql_escapes_are_refused(server, tmp_path, path):
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake

    out = tmp_path / "out"
    out.mkdir()
    before = versions(server.lake)
    q = LakeQuery(Lake(server.lake), timeout_s=2)
    answers = {}
    try:
        for what, sql, _ in ATTEMPTS:
            sql = sql.format(out=out, lake=server.lake)
            if path == "LakeQuery":
                with pytest.raises(NLAQueryError) as e:
                    q.run(sql)
                answers[what] = str(e.value)
            else:
                status, body = server.call("/v1/query", {"sql": sql})
                assert status == 400, (what, status, body)
                answers[what] = body["error"]
    finally:
        q.close()
    for what, _, why in ATTEMPTS:  # each refused for its own reason, on one line, with the fix
        message = answers[what]
        assert re.search(why.replace("LAKE", re.escape(str(server.lake))), message), (what, why, message)
        assert "\n" not in message and PASSWD not in message and "Fix: " in message, (what, message)
    assert list(out.iterdir()) == [], "a query wrote a file"
    assert versions(server.lake) == before
    report(f"{len(ATTEMPTS)} escapes through {path}: {', '.join(w for w, _, _ in ATTEMPTS)}",
           f"all {len(ATTEMPTS)} refused with a one-line error (the endless one cut off at the 2 s timeout); no file "
           f"written, nothing of /etc read, every table at its version")
