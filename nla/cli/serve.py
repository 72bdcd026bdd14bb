"""`nla serve`: hand over to the Ray Serve program `python -m nla.serve` (nla/ itself never imports Ray)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from nla.errors import NLAInputError


def add_commands(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("serve", formatter_class=formatter, help="the models and the lake behind an HTTP API and a "
                                                                "web page (Ray Serve)",
                       description="Start a Ray Serve app: extractor (base model), AV, AR and a read-only lake behind "
                                   "a FastAPI ingress (OpenAPI docs at /docs) and the explorer page at /: the lake's "
                                   "overview with charts and running jobs, browsing labels by score, status, keyword "
                                   "or feature, comparing two recipes, and a text's tokens explained in one batch. "
                                   "Loopback only unless --host says otherwise; set NLA_API_TOKEN to require a bearer "
                                   "token.",
                       epilog="examples:\n"
                              "  nla serve                                   # the toy kit, ./lake (or, if there "
                              "is none, the lake `nla demo` made), http://127.0.0.1:8000/\n"
                              "  nla serve --config serve/config.yaml --lake ./lake --port 8080\n"
                              "  nla serve models.av=/ckpt/av models.ar=/ckpt/ar models.base=/ckpt/base\n"
                              "  NLA_API_TOKEN=s3cret nla serve --host 0.0.0.0")
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults, the toy kit)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--lake", default=None, help="lake root, read-only (default: $NLA_LAKE, else ./lake, else "
                                                "./nla-demo/lake when `nla demo` made one)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. limits.max_vectors=32")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise NLAInputError(f"{bad[0]!r}: overrides are KEY=VALUE, e.g. http.port=8080 or models.ar=/ckpt/ar.")
    argv = [sys.executable, "-m", "nla.serve", *args.overrides]
    for flag in ("config", "port", "host", "lake"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0
