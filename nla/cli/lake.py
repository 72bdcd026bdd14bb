"""`nla query`, `nla tables`, `nla search`, `nla mine`: reading the lake from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nla.cli.io import at_least_one, positive, print_table
from nla.errors import NLAInputError

FORMATS = ("table", "csv", "json", "parquet")


def _lake_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lake", default=None, help="lake root: a folder or s3://, gs://, abfs:// URI "
                                                "(default: $NLA_LAKE, else ./lake)")


def add_commands(sub: Any, formatter: Any) -> None:
    q = sub.add_parser("query", formatter_class=formatter, help="read-only SQL over the lake (DuckDB)",
                       description="Run one read-only SELECT over the lake. Views: activations, explanations, runs, "
                                   "shards, checkpoints, labels (explanations + where each activation came from: "
                                   "context, source, label, flags), quality (the flags summed up), "
                                   "features (one row per ranked feature of each explanation), training_sets_<name>. "
                                   "Macros: search_explanations(regex), search_features(regex), "
                                   "nearest(vector::FLOAT[d], k [, exact := true]) (through the index; its `method` "
                                   "column says how). Writes, files, extensions and settings are refused.",
                       epilog="examples:\n"
                              "  nla query \"SELECT status, count(*), avg(mse) FROM explanations GROUP BY status\"\n"
                              "  nla query \"SELECT feature, count(*) n FROM features WHERE rank = 1 GROUP BY 1 "
                              "ORDER BY n DESC\"\n"
                              "  nla query \"SELECT * FROM search_explanations('rain|storm') LIMIT 5\"\n"
                              "  nla query \"SELECT * FROM labels ORDER BY mse DESC\" --format parquet "
                              "--out worst.parquet\n"
                              "  nla query \"SELECT count(*) FROM activations\" --at activations=3   # time travel")
    q.add_argument("sql", help="one SELECT statement")
    q.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    q.add_argument("--out", help="write to this file instead of stdout (required for parquet)")
    q.add_argument("--limit", type=int, default=50, help="rows shown in table format (default 50; files get all)")
    q.add_argument("--at", action="append", default=[], metavar="TABLE=VERSION",
                   help="read TABLE as of a Delta version (repeatable)")
    q.add_argument("--timeout", type=float, default=30.0, help="seconds before the query is cut off (default 30)")
    _lake_arg(q)
    q.set_defaults(func=cmd_query)

    t = sub.add_parser("tables", formatter_class=formatter, help="list the lake's tables: versions, rows, schema",
                       description="List the lake's Delta tables with their version, row count, vector width and "
                                   "columns.", epilog="example:\n  nla tables --lake ./lake")
    t.add_argument("--schema", action="store_true", help="also print every column with its type")
    _lake_arg(t)
    t.set_defaults(func=cmd_tables)

    s = sub.add_parser("search", formatter_class=formatter, help="find activations by meaning, keyword or regex",
                       description="By meaning (default): the AR reconstructs a vector from TEXT and the lake returns "
                                   "the activations nearest by cosine, with their explanations. With --keyword: "
                                   "explanations matching TEXT as a case-insensitive regex.",
                       epilog="examples:\n  nla search \"The text is about weather.\" --ar KIT/ar -k 5\n"
                              "  nla search \"The text is about weather.\" --exact --format json\n"
                              "  nla search --keyword \"paris|tokyo\"")
    s.add_argument("text", help="what to look for")
    s.add_argument("--keyword", action="store_true", help="regex/keyword search over explanations instead")
    s.add_argument("--exact", action="store_true", help="scan every vector instead of using the index (`nla index`)")
    s.add_argument("--format", choices=FORMATS[:3], default="table", help="output format (default: table)")
    s.add_argument("--ar", help="AR checkpoint that turns TEXT into a vector (default: the toy kit's AR)")
    s.add_argument("-k", type=int, default=10, help="results (default 10)")
    _lake_arg(s)
    s.set_defaults(func=cmd_search)

    c = sub.add_parser("compare", formatter_class=formatter, help="two labeling recipes side by side: the paired "
                       "difference on shared activations",
                       description="Pair two recipes (another AV, AR or sampling) on the activations both scored: "
                                   "n, each one's mean mse (per activation, the mean over its samples), the paired "
                                   "mean difference B - A with its 95%% interval, wins and losses, and the rows that "
                                   "changed most. A recipe is named by its hash (a prefix of 4+ characters; the job's "
                                   "summary prints it) or by the id of the run that wrote it. In SQL: "
                                   "SELECT * FROM compare('HASH_A', 'HASH_B').",
                       epilog="examples:\n  nla compare 3fa2c1 9c01aa\n"
                              "  nla compare label-20261206-0612-ab12 label-20261206-0630-cd34 --top 5\n"
                              "  nla query \"SELECT recipe, av, count(*), avg(mse) FROM explanations GROUP BY ALL\"")
    c.add_argument("a", help="recipe hash (prefix) or run id: the baseline")
    c.add_argument("b", help="recipe hash (prefix) or run id: the candidate")
    c.add_argument("--top", type=int, default=10, help="rows that changed most to show (default 10)")
    c.add_argument("--format", choices=("table", "json"), default="table")
    _lake_arg(c)
    c.set_defaults(func=cmd_compare)

    g = sub.add_parser("migrate", formatter_class=formatter, help="upgrade a lake written by an older nla",
                       description="Upgrade the lake's tables to this nla's schema in place: one atomic commit per "
                                   "table, streamed; rerun it if it was interrupted. Old versions stay readable "
                                   "by time travel until vacuumed. Rows of the old lake get recipe 'legacy'.",
                       epilog="example:\n  nla migrate --lake ./lake")
    _lake_arg(g)
    g.set_defaults(func=cmd_migrate)

    x = sub.add_parser("index", formatter_class=formatter, help="build or catch up the activations' search index",
                       description="Build the ANN index (faiss: PCA + IVF-PQ, exact rerank) over the activations, "
                                   "or add the rows committed since it was last built. It lives under "
                                   "LAKE/_index/activations and records the table version it covers; searches scan "
                                   "newer rows exactly, so an index that is behind is slower, never incomplete.",
                       epilog="examples:\n  nla index --lake ./lake\n  nla index --rebuild   # retrain from scratch")
    x.add_argument("--rebuild", action="store_true", help="train a new index instead of extending the current one")
    _lake_arg(x)
    x.set_defaults(func=cmd_index)

    m = sub.add_parser("mine", formatter_class=formatter, help="write hard examples to a training-set table",
                       description="Select labeled activations with a SQL condition over the `labels` columns "
                                   "(act_id, av, ar, sample, explanation, status, mse, cos, context, ...) and write "
                                   "them with their vectors to training_sets/NAME (each run is a new version).",
                       epilog="example:\n  nla mine --where \"mse > 0.8 AND status = 'ok'\" --limit 5000 "
                              "--name hard_v1")
    m.add_argument("--where", required=True, help="SQL boolean condition")
    m.add_argument("--name", required=True, help="training-set name (letters, digits, _ - .)")
    m.add_argument("--limit", type=int, default=None, help="at most this many rows (hardest first)")
    m.add_argument("--order", default="mse_desc", help="mse_desc (default) | mse_asc | none")
    _lake_arg(m)
    m.set_defaults(func=cmd_mine)


def _lake(args: argparse.Namespace) -> Any:
    from nla.lake.store import Lake

    return Lake(args.lake)


def existing_lake(args: argparse.Namespace) -> Any:
    """The lake, refused with its path when it is a local folder that does not exist (a typo, not an empty lake)."""
    from pathlib import Path

    lake = _lake(args)
    if lake.is_local and not Path(lake.root).exists():
        raise NLAInputError(f"lake {lake.root}: no such folder. Fix: pass --lake the folder `nla label` wrote (or "
                            "set $NLA_LAKE); `nla label input=CORPUS --lake DIR` makes one.")
    if lake.is_local and not Path(lake.root).is_dir():
        raise NLAInputError(f"lake {lake.root}: a file, not a folder. Fix: pass --lake the folder `nla label` wrote "
                            "(the one holding explanations/, activations/, runs/).")
    return lake


def _versions(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, v = item.partition("=")
        if not name or not v.isdigit():
            raise NLAInputError(f"--at {item!r}: expected TABLE=VERSION, e.g. --at explanations=3")
        out[name] = int(v)
    return out


def _printable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        for k, v in r.items():
            if isinstance(v, list) and len(v) > 4:
                r[k] = "[" + ", ".join(f"{x:.3g}" for x in v[:3]) + f", … ({len(v)})]"
    return rows


def cmd_query(args: argparse.Namespace) -> int:
    from nla.lake.query import LakeQuery

    if args.format == "parquet" and not args.out:
        raise NLAInputError("--format parquet needs --out FILE.parquet.")
    at_least_one("--limit", args.limit)
    positive("--timeout", args.timeout)
    with LakeQuery(existing_lake(args), versions=_versions(args.at), timeout_s=args.timeout) as q:
        return _query(q, args)


def _query(q: Any, args: argparse.Namespace) -> int:
    if args.format == "table":
        t = q.run(args.sql, limit=args.limit)
        print_table(_printable(t.to_pylist()), t.column_names, width=80)
        print(f"({t.num_rows} rows{'; --limit shows more' if t.num_rows == args.limit else ''})")
        return 0
    q.check(args.sql)
    n = stream_result(q, args.sql, args.format, args.out)
    if args.out:
        print(f"{n} rows -> {Path(args.out).resolve()}")
    return 0


def stream_result(q: Any, sql: str, fmt: str, out_path: str | None) -> int:
    """Stream a checked SELECT's result to a file (or stdout) as csv, json lines or parquet; returns the rows."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = open(out_path, "wb") if out_path else sys.stdout.buffer
    writer, n = None, 0
    try:
        for batch in q.stream(sql, checked=True):
            n += batch.num_rows
            if fmt == "json":
                for row in batch.to_pylist():
                    out.write((json.dumps(row, default=str) + "\n").encode())
                continue
            if writer is None:
                writer = pq.ParquetWriter(out, batch.schema) if fmt == "parquet" else pcsv.CSVWriter(out, batch.schema)
            writer.write(pa.Table.from_batches([batch]) if fmt == "parquet" else batch)
    finally:
        if writer is not None:
            writer.close()
        if out_path:
            out.close()
    return n


def cmd_compare(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from nla.lake.compare import compare
    from nla.lake.query import LakeQuery

    at_least_one("--top", args.top)
    lake = _lake(args)
    if not lake.exists("explanations"):
        raise NLAInputError(f"lake {lake.root} has no explanations to compare. Fix: label it (`nla label`), or pass "
                            "--lake to the lake that has them.")
    with LakeQuery(lake) as q:
        c = compare(q, args.a, args.b, top=args.top)
    if args.format == "json":
        print(json.dumps(asdict(c), default=str))
        return 0
    better = "B is better" if c.diff + c.ci95 < 0 else "A is better" if c.diff - c.ci95 > 0 else "no clear difference"
    print(f"A = recipe {c.recipe_a}, B = recipe {c.recipe_b}: {c.n} shared activations")
    print(f"  mean mse   A {c.mse_a:.4f}   B {c.mse_b:.4f}")
    print(f"  B - A      {c.diff:+.4f} (95% interval {c.diff - c.ci95:+.4f} .. {c.diff + c.ci95:+.4f}: {better})")
    print(f"  B better on {c.b_better}, A better on {c.a_better}, equal on {c.n - c.b_better - c.a_better}")
    if c.changed:
        print("\nchanged most:")
        print_table([{"act_id": r["act_id"], "mse_a": f"{r['mse_a']:.3f}", "mse_b": f"{r['mse_b']:.3f}",
                      "diff": f"{r['diff']:+.3f}", "explanation_a": r["explanation_a"],
                      "explanation_b": r["explanation_b"]} for r in c.changed],
                    ["act_id", "mse_a", "mse_b", "diff", "explanation_a", "explanation_b"], width=40)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from nla.lake.migrate import migrate, pending

    lake = _lake(args)
    if not lake.names():
        raise NLAInputError(f"lake {lake.root}: no tables here, nothing to migrate. Fix: pass --lake the lake's root.")
    if not pending(lake):
        print(f"lake {lake.root} is already at this nla's schema: nothing to migrate")
        return 0
    done = migrate(lake)
    print(f"lake {lake.root}: migrated {', '.join(done)}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    lake = existing_lake(args)
    infos = lake.infos()
    if not infos:
        print(f"lake {lake.root}: no tables yet (`nla label` writes them)")
        return 0
    print_table([{"table": i.name, "version": i.version, "rows": i.rows, "d": i.d or "", "columns": len(i.schema)}
                 for i in infos], ["table", "version", "rows", "d", "columns"])
    if args.schema:
        for i in infos:
            print(f"\n{i.name}:")
            for f in i.schema:
                print(f"  {f.name:<16} {f.type}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from nla.lake.query import LakeQuery

    at_least_one("-k", args.k)
    with LakeQuery(_lake(args)) as q:
        if args.keyword:
            t = q.keyword(args.text, limit=args.k)
            return _print_hits(t, ["act_id", "mse", "context", "explanation"], args.format)
        from nla.client import NLACritic
        from nla.checks import check_checkpoint

        ar = args.ar or _toy_ar()
        q.check_width(check_checkpoint(ar, "ar").d_model, f"--ar {ar}")  # before the AR loads
        vector = NLACritic(ar).reconstruct(args.text).numpy()
        t = q.nearest(vector, k=args.k, exact=args.exact)
        r = q.last_search
    _print_hits(t, ["similarity", "act_id", "mse", "context", "explanation", "method"], args.format)
    if args.format == "table" and r is not None:
        how = {"exact": f"exact scan of {r.scanned_rows:,} rows",
               "index": f"index (activations version {r.index_version}, {r.indexed_rows:,} rows)",
               "index+scan": f"index (activations version {r.index_version}, {r.indexed_rows:,} rows) + exact scan "
                             f"of {r.scanned_rows:,} newer rows (`nla index` adds them)"}[r.method]
        print(f"(searched by {how})")
    return 0


def _print_hits(t: Any, columns: list[str], fmt: str) -> int:
    """Search results as a table, CSV or JSON lines (all columns for csv/json)."""
    import pyarrow.csv as pcsv

    if fmt == "table":
        print_table(t.to_pylist(), [c for c in columns if c in t.column_names], width=70)
    elif fmt == "csv":
        pcsv.write_csv(t, sys.stdout.buffer)
    else:
        for row in t.to_pylist():
            print(json.dumps(row, default=str))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from nla.lake.ann import update_index

    r = update_index(_lake(args), rebuild=args.rebuild, progress=True)
    print(f"index ({r.kind}): {r.note}; {r.rows_indexed:,} rows in {r.segments} segment(s), covers activations "
          f"version {r.table_version} ({r.seconds:.1f}s)")
    return 0


def _toy_ar() -> Path:
    from nla.toy.kit import kit_dir

    ar = kit_dir() / "ar"
    if not (ar / "nla_meta.yaml").is_file():
        raise NLAInputError("search by meaning needs an AR: pass --ar AR_DIR (the toy kit's is used when built).")
    return ar


def cmd_mine(args: argparse.Namespace) -> int:
    from nla.lake.mine import mine

    r = mine(_lake(args), where=args.where, name=args.name, limit=args.limit, order=args.order, allow_empty=False)
    print(f"{r.rows} rows -> {r.table} (version {r.version}, run {r.run_id})")
    return 0
