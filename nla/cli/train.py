"""`nla train sft|grpo`, `nla teach`, `nla retrain`: hand over to the Ray programs in jobs/ (nla/ never imports Ray)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from nla.errors import NLAInputError

TRAIN_EPILOG = """\
examples:
  nla mine --where "mse > 0.8 AND status = 'ok'" --name hard_v1
  nla train sft --role av --data hard_v1_best --from KIT/av --out ./ckpt/av-v2
  nla train sft --role ar --data hard_v1 --from KIT/ar scaling.workers=2 sft.steps=200
  nla train grpo --data activations --from KIT/av --ar KIT/ar grpo.steps=100 grpo.group=8
  nla train sft --role av --data hard_v1 --from ./av scaling.use_gpu=true scaling.workers=8 scaling.strategy=fsdp

KEY=VALUE overrides set any field of nla/train/config.py (sft.*, grpo.*, scaling.*). The final checkpoint lands in
--out (default ./checkpoints/<run_id>) in the release layout and is registered in the lake's checkpoints table.
"""


def add_commands(sub: Any, formatter: Any) -> None:
    t = sub.add_parser("train", formatter_class=formatter, help="SFT or GRPO on Ray Train (DDP/FSDP, checkpoints)",
                       description="Train the AV or AR on a lake table with Ray Train: DDP (gloo on CPU, NCCL on "
                                   "GPUs) or FSDP, checkpoints every scaling.checkpoint_every steps, and resume after "
                                   "a worker failure.", epilog=TRAIN_EPILOG)
    tsub = t.add_subparsers(dest="algo", metavar="ALGO")
    tsub.required = True
    for algo, helptext in (("sft", "supervised: AV on explanations (response CE), AR on vectors (mse_nrm)"),
                           ("grpo", "RL on the AV, reward = -mse from the live AR (trained beside it)")):
        p = tsub.add_parser(algo, formatter_class=formatter, help=helptext, description=helptext,
                            epilog=TRAIN_EPILOG)
        if algo == "sft":
            p.add_argument("--role", choices=["av", "ar"], required=True, help="which model to train")
        else:
            p.add_argument("--ar", default=None, help="the AR that scores and trains beside the AV (default: toy)")
        p.add_argument("--data", required=True, help="table: a training set name (training_sets/<name>) or "
                                                     "`activations`")
        p.add_argument("--from", dest="init", default=None, help="checkpoint folder to start from (default: toy)")
        p.add_argument("--out", default=None, help="output folder (default ./checkpoints/<run_id>)")
        p.add_argument("--workers", type=int, default=None, help="Ray Train workers (= scaling.workers)")
        p.add_argument("--steps", type=int, default=None, help=f"optimiser steps (= {algo}.steps)")
        p.add_argument("--lake", default=None, help="lake root (default $NLA_LAKE or ./lake)")
        p.add_argument("--config", default=None, help="YAML config (fields of nla/train/config.py)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
        p.set_defaults(func=cmd_train)

    # `nla teach` / `nla retrain` hand every argument (--help too) to their jobs/ program
    for name, module, helptext in (
            ("teach", "nla.jobs.teach", "make SFT targets for a mined set (teacher LLM or best-of-k), with Ray Data"),
            ("retrain", "nla.jobs.retrain", "label -> mine hard examples -> targets -> SFT -> relabel held-out sets")):
        m = sub.add_parser(name, add_help=False, help=helptext)
        m.add_argument("args", nargs="*", help=f"options of python -m {module} (nla {name} --help lists them)")
        m.set_defaults(func=cmd_module, module=module)


def cmd_train(args: argparse.Namespace) -> int:
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise NLAInputError(f"{bad[0]!r}: overrides are KEY=VALUE, e.g. sft.steps=200 or scaling.workers=2.")
    o = [f"data={args.data}"]
    o += [f"init={args.init}"] if args.init else []
    o += [f"out={args.out}"] if args.out else []
    o += [f"lake={args.lake}"] if args.lake else []
    o += [f"role={args.role}"] if args.algo == "sft" else ([f"ar={args.ar}"] if args.ar else [])
    o += [f"scaling.workers={args.workers}"] if args.workers is not None else []  # 0 is refused, never dropped
    o += [f"{args.algo}.steps={args.steps}"] if args.steps is not None else []
    argv = [sys.executable, "-m", "nla.jobs.train", "--algo", args.algo,
            *(["--config", args.config] if args.config else []), *o, *args.overrides]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0


def cmd_module(args: argparse.Namespace) -> int:
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", args.module, *args.args])
    return 0
