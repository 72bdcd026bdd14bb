"""The `nla` command: argument parsing, dispatch, and one-line errors (exit 2) for every NLAError.

Subcommand bodies live in cli/models.py (explain, score, init) and cli/toy.py (toy build, demo). Heavy imports
happen inside the subcommands so `nla --help` is instant.
"""

from __future__ import annotations

import argparse
import sys

from nla.errors import NLAError

EPILOG = """\
examples:
  nla demo                                   build (or reuse) the toy kit, explain and score held-out activations
  nla toy build                              build the toy NLA pair into the cache ($NLA_HOME or ~/.cache/nla)
  nla toy corpus --out toy-corpus && nla label input=toy-corpus     label a corpus into ./lake (Ray Data)
  nla explain --av AV_DIR --vectors acts.npy --ar AR_DIR --temperature 0
  nla explain --av AV_DIR --text "The cat sat on the mat." --positions 3,5
  nla score --ar AR_DIR --explanation "The text is about cats." --vectors acts.npy --row 0
  nla init --base ~/models/SmolLM2 --layer 10 --out ./smol-nla
  nla tables                                 the lake's tables (--lake DIR, default $NLA_LAKE or ./lake)
  nla query "SELECT status, count(*), avg(mse) FROM explanations GROUP BY status"
  nla search "The text is about weather." -k 5
  nla import sae.safetensors --tensor W_dec --source sae:res-l20     vectors (SAE latents, ...) into the lake
  nla quality                                the quality flags of the lake's explanations, summed up
  nla export hf --out labels-dataset         the labels as a HF-datasets-ready Parquet folder with a card
  nla mine --where "mse > 0.8" --limit 1000 --name hard_v1
  nla train sft --role av --data hard_v1_best --from KIT/av     retrain on mined examples (Ray Train)
  nla retrain --lake ./lake                  label -> mine -> retrain -> relabel the held-out hard set
  nla serve --lake ./lake                    HTTP API + web page on http://127.0.0.1:8000/ (Ray Serve)
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    from nla.cli import export, imports, jobs, lake, models, serve, toy, train

    parser = argparse.ArgumentParser(
        prog="nla", formatter_class=_formatter, epilog=EPILOG,
        description="Natural Language Autoencoders: explain activation vectors in words (AV), reconstruct them from "
                    "the words (AR), and score the round trip (mse = 2(1 - cos)).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    models.add_commands(sub, _formatter)
    toy.add_commands(sub, _formatter)
    jobs.add_commands(sub, _formatter)
    lake.add_commands(sub, _formatter)
    imports.add_commands(sub, _formatter)
    export.add_commands(sub, _formatter)
    serve.add_commands(sub, _formatter)
    train.add_commands(sub, _formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "module"):  # `nla teach --data x ...`: everything after the command goes to the jobs/ program
        args.args, extra = argv[argv.index(args.command) + 1:], []
    if extra:  # `nla label input=x --lake y sampling.samples=2`: KEY=VALUE overrides may follow options
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        else:
            args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args) or 0)
    except NLAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `nla query ... | head`
        sys.stderr.close()
        return 0
    except OSError as e:  # a path the command was given that cannot be read or written: `--out` into a missing folder
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or e}. Fix: check that the path and its folder exist, that it is a "
              "file or a folder as the option asks, and that it can be written.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
