"""`nla export neuronpedia | hf | query`: the lake's labels as files other tools read (nla/exports)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from nla.errors import NLAInputError


def add_commands(sub: Any, formatter: Any) -> None:
    e = sub.add_parser("export", formatter_class=formatter, help="labels out of the lake: Neuronpedia, a HF "
                       "dataset folder, or any query to Parquet/CSV",
                       description="Write the lake's explanations where people look for them. Every export streams "
                                   "(bounded memory) and refuses to write into a folder that is not empty.",
                       epilog="examples:\n"
                              "  nla export hf --out toy-sae-labels                       # load_dataset(folder)\n"
                              "  nla export hf --out clean --where \"len(flags) = 0\" --vectors\n"
                              "  nla export neuronpedia --out np --from sae:res-l20 --model-id gemma-2-2b "
                              "--source-id 20-nla-res --author-id USER_ID\n"
                              "  nla export query \"SELECT * FROM quality\" --out quality.csv")
    esub = e.add_subparsers(dest="export_command", metavar="FORMAT")
    esub.required = True

    h = esub.add_parser("hf", formatter_class=formatter, help="a HF-datasets-ready Parquet folder with a dataset card",
                        description="OUT/data/train-*.parquet (every explanation with its source, label, scores and "
                                    "flags; --vectors adds the vector) and OUT/README.md, a dataset card with the "
                                    "recipes, models, counts and score summary. `datasets.load_dataset(OUT)` reads "
                                    "it; `huggingface-cli upload` (or push_to_hub) shares it.")
    h.add_argument("--out", required=True, help="a new (or empty) folder")
    h.add_argument("--where", default="", help="SQL condition over the labels columns, e.g. \"len(flags) = 0\"")
    h.add_argument("--vectors", action="store_true", help="add each row's vector (d float32 values)")
    h.add_argument("--rows-per-file", type=int, default=100_000, help="rows per Parquet file (default 100000)")
    h.add_argument("--lake", default=None, help="lake root (default $NLA_LAKE, else ./lake)")
    h.set_defaults(func=cmd_export_hf)

    n = esub.add_parser("neuronpedia", formatter_class=formatter, help="Neuronpedia's explanations export format",
                        description="OUT/MODEL_ID/SOURCE_ID/explanations/batch-N.jsonl.gz: one line per latent of "
                                    "one imported source (its best-scored, unflagged explanation), keyed by "
                                    "Neuronpedia's model id, source id and the latent index, as their exports are "
                                    "and their importer reads. docs/export.md maps every field.")
    n.add_argument("--out", required=True, help="a new (or empty) folder")
    n.add_argument("--model-id", required=True, help="Neuronpedia's model id (e.g. gemma-2-2b)")
    n.add_argument("--source-id", required=True, help="Neuronpedia's source id of the SAE (e.g. 20-gemmascope-res-16k)")
    n.add_argument("--author-id", required=True, help="the Neuronpedia user id the explanations are credited to")
    n.add_argument("--from", dest="source", default="", help="the lake's source to export (default: the only "
                                                              "imported one)")
    n.add_argument("--type-name", default=None, help="their explanation type name, when one is registered")
    n.add_argument("--explanation-model-name", default=None, help="their explanation model name, when registered")
    n.add_argument("--include-flagged", action="store_true", help="also export flagged explanations")
    n.add_argument("--where", default="", help="SQL condition over the labels columns")
    n.add_argument("--lake", default=None, help="lake root (default $NLA_LAKE, else ./lake)")
    n.set_defaults(func=cmd_export_neuronpedia)

    q = esub.add_parser("query", formatter_class=formatter, help="any read-only SELECT to Parquet or CSV",
                        description="Stream one read-only SELECT over the lake (as `nla query`) into a file; the "
                                    "format follows the suffix (.parquet, .csv, .jsonl) unless --format says.")
    q.add_argument("sql", help="one SELECT statement")
    q.add_argument("--out", required=True, help="FILE.parquet, FILE.csv or FILE.jsonl")
    q.add_argument("--format", choices=("parquet", "csv", "json"), default=None)
    q.add_argument("--lake", default=None, help="lake root (default $NLA_LAKE, else ./lake)")
    q.set_defaults(func=cmd_export_query)


def _lake(args: argparse.Namespace) -> Any:
    from nla.cli.lake import existing_lake

    return existing_lake(args)


def cmd_export_hf(args: argparse.Namespace) -> int:
    from nla.exports.hf import export_hf

    r = export_hf(_lake(args), args.out, where=args.where, vectors=args.vectors, rows_per_file=args.rows_per_file,
                  command="nla " + shlex.join(sys.argv[1:]))
    print(f"{r.rows} explanations -> {r.folder.resolve()} ({len(r.files)} Parquet files + README.md dataset card)")
    print(f"read it: datasets.load_dataset({str(r.folder)!r}, split='train')")
    return 0


def cmd_export_neuronpedia(args: argparse.Namespace) -> int:
    from nla.exports.neuronpedia import export_neuronpedia

    r = export_neuronpedia(_lake(args), args.out, model_id=args.model_id, source_id=args.source_id,
                           author_id=args.author_id, source=args.source, type_name=args.type_name,
                           explanation_model_name=args.explanation_model_name, include_flagged=args.include_flagged,
                           where=args.where)
    print(f"{r.rows} explanations -> {r.folder.resolve()} ({len(r.files)} batch files)")
    for why, count in r.left_out.items():
        print(f"  left out: {count} {why}")
    return 0


def cmd_export_query(args: argparse.Namespace) -> int:
    from nla.cli.lake import stream_result
    from nla.exports.select import EXPORT_TIMEOUT_S
    from nla.lake.query import LakeQuery

    fmt = args.format or {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}.get(
        Path(args.out).suffix)
    if fmt is None:
        raise NLAInputError(f"--out {args.out}: no format for suffix {Path(args.out).suffix!r}. Fix: name it .parquet, "
                            ".csv or .jsonl, or pass --format.")
    with LakeQuery(_lake(args), timeout_s=EXPORT_TIMEOUT_S) as q:
        q.check(args.sql)
        n = stream_result(q, args.sql, fmt, args.out)
    print(f"{n} rows -> {Path(args.out).resolve()}")
    return 0
