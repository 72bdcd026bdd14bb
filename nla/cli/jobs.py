"""`nla label` and `nla extract`: hand over to the Ray program `python -m nla.jobs.label` (nla/ itself never imports Ray)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from nla.errors import NLAInputError


def add_commands(sub: Any, formatter: Any) -> None:
    for name, helptext in (("label", "corpus -> activations -> explanations + scores, into the lake (Ray Data)"),
                           ("extract", "corpus -> activations only, into the lake (Ray Data)")):
        p = sub.add_parser(name, formatter_class=formatter, help=helptext,
                           description=f"{helptext}. Streams input shards through actor pools on a local Ray (or "
                                       "$RAY_ADDRESS), commits each shard atomically, skips shards already committed "
                                       "and prints a summary (also stored in the runs table).",
                           epilog="examples:\n"
                                  "  nla toy corpus --out toy-corpus && nla label input=toy-corpus\n"
                                  f"  nla {name} --config jobs/configs/smollm2.yaml input=./my-shards lake=./lake\n"
                                  "  nla label --from-activations              # explain + score what `nla extract` "
                                  "wrote\n  nla label sampling.samples=4 sampling.temperature=1.0")
        p.add_argument("--config", default=None, help="YAML config (default: jobs/configs/toy.yaml)")
        p.add_argument("--lake", default=None, help="lake root (same as lake=DIR; default $NLA_LAKE or ./lake)")
        p.add_argument("--verbose", action="store_true",
                       help="also show Ray's own progress blocks and start-up logs (same as verbose=true)")
        if name == "label":
            p.add_argument("--from-activations", action="store_true",
                           help="label the lake's existing activations instead of reading a corpus")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. input=./corpus")
        p.set_defaults(func=cmd_job, job=name)
        _teach_on_help(p)


CORPUS_FORMATS = """\
corpus formats (input=PATH; input_format=auto tells them apart):
  *.jsonl   one JSON object per line, the text under "text":   {"id": "doc-1", "text": "The wind brought rain."}
  *.parquet a string column "text"
  *.txt     one document per file: the whole file is the text
  Delta     a folder with _delta_log/, a column "text"
  HF        a saved `datasets` folder (Dataset.save_to_disk), a column "text"
  text_column=NAME reads another column or JSON key; id_column=NAME reads ids from another one (the default
  config sets id_column=id; id_column= with no name ids each document by a hash of its text).
  Other fields are not stored."""


def _teach_on_help(p: argparse.ArgumentParser) -> None:
    """Add the corpus formats and every config key (from the dataclasses) to --help, built only when help is shown:
    the config module imports torch, which `nla label` itself does not need before it hands over to the job."""
    plain = p.format_help

    def format_help() -> str:
        from nla.configdoc import help_text
        from nla.labeling.config import LabelConfig

        p.epilog = (f"{p.epilog}\n\n{CORPUS_FORMATS}\n\nconfig keys (KEY=VALUE; defaults of the dataclass, the --config file "
                    f"may set others; all of them: docs/configuration.md):\n{help_text(LabelConfig)}")
        p.format_help = plain
        return plain()

    p.format_help = format_help  # type: ignore[method-assign]


def cmd_job(args: argparse.Namespace) -> int:
    mode = "extract" if args.job == "extract" else ("from-activations" if args.from_activations else "label")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise NLAInputError(f"{bad[0]!r}: overrides are KEY=VALUE. Fix: write e.g. input=./corpus or "
                            "sampling.samples=4.")
    overrides = list(args.overrides) + ([f"lake={args.lake}"] if args.lake else []) + \
        (["verbose=true"] if args.verbose else [])
    from nla.labeling.config import default_config  # here: the config module imports torch, the CLI need not

    argv = [sys.executable, "-m", "nla.jobs.label", "--config", args.config or default_config(), "--mode", mode,
            *overrides]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0
