"""`python -m nla.serve` (what `nla serve` runs): start Ray and Serve, deploy the NLA app, serve until interrupted.

    python -m nla.serve                                     # the toy kit on http://127.0.0.1:8000 (page at /, docs at /docs)
    python -m nla.serve --config serve/config.yaml --lake ./lake --port 8080
    NLA_API_TOKEN=s3cret python -m nla.serve --host 0.0.0.0 models.av=/ckpt/av models.ar=/ckpt/ar models.base=/ckpt/base

Reads the config (serve/config.py), checks models and port before starting anything, prints the URL, and shuts
Serve down on SIGINT/SIGTERM. Bad input exits 2 with one line naming it and the fix.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from nla.errors import NLAError
from nla.jobs.raystart import start_ray
from nla.rayaddress import cluster_address
from nla.serve.config import LOOPBACK, TOKEN_ENV, ServeConfig, load_serve_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nla serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults = the toy kit)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: http.port, 8000)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 exposes the API)")
    p.add_argument("--lake", default=None, help="lake root, read-only (default: $NLA_LAKE, else ./lake)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. models.ar=''")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> ServeConfig:
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise NLAError(f"{bad[0]!r}: overrides are KEY=VALUE. Fix: write e.g. http.port=8080 or "
                       "models.ar=/ckpt/ar.")
    extra = [f"{k}={v}" for k, v in (("http.port", args.port), ("http.host", args.host), ("lake", args.lake))
             if v is not None]
    return load_serve_config(args.config, [*args.overrides, *extra])


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise NLAError(f"cannot listen on {host}:{port} ({e.strerror}). Fix: pick another --port, or stop what "
                           "holds it.") from e


def run(cfg: ServeConfig) -> None:
    import ray
    from ray import serve

    from nla.serve.app import build_app, resolve_lake, resolve_models
    from nla.serve.security import token_digest

    host, port = cfg.http.host, cfg.http.port
    digest = token_digest()
    # only the digest travels: a local Ray's processes (and so the replicas) would inherit the token from this one
    os.environ.pop(TOKEN_ENV, None)
    if host not in LOOPBACK and not digest:
        print(f"warning: listening on {host} without a token: anyone who reaches this port can use the API. "
              f"Set {TOKEN_ENV} to require 'Authorization: Bearer <token>'.", file=sys.stderr)
    check_port(host, port)
    address = cluster_address(cfg.ray_address)  # refused now if nothing answers there (ray.init would retry forever)
    info = resolve_models(cfg.models)
    # a local Ray on a small machine: no dashboard (it costs a core's worth of start-up); clusters keep theirs
    start_ray(address, cfg.ray_address, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": cfg.http.request_timeout_s})
        serve.run(build_app(cfg, info, digest), name="nla", route_prefix="/",
                  logging_config={"enable_access_log": cfg.http.access_log})
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        print(f"NLA serving {info['av']['id']} (AR: {info['ar']['id'] if info['ar'] else 'none'}, base: "
              f"{info['base']['id'] if info['base'] else 'none'}; lake {resolve_lake(cfg.lake)}) at {url}/  (API "
              f"docs: {url}/docs; token {'required' if digest else 'off'})", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        print("shutting down", flush=True)
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    try:
        run(config_from(parse_args(argv)))
    except NLAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
