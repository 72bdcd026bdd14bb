"""What `nla serve` promises about exposure and resources, on the real server: a warning when it listens beyond
loopback without a token; the token stays in the CLI's process (only its SHA-256 reaches Ray and the replicas); the
query limits the config sets (DuckDB memory per lake replica, result bytes, request body bytes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from nla.sysinfo import process_tree
from tests.serve.conftest import TOKEN


def serve_cli(*args: str, token: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NLA_API_TOKEN"} | ({"NLA_API_TOKEN": token} if token else {})
    return subprocess.run([sys.executable, "-m", "nla.cli.main", "serve", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_listening_beyond_loopback_without_a_token_warns():
    """`--host 0.0.0.0` without NLA_API_TOKEN warns first (the port is held here, so nothing else starts); with a
    token there is no warning."""
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        refused = f"error: cannot listen on 0.0.0.0:{port} (Address already in use). Fix: pick another --port, " \
                  "or stop what holds it."
        open_ = serve_cli("--host", "0.0.0.0", "--port", str(port), token=None)
        assert (open_.returncode, open_.stderr.splitlines()) == (2, [
            "warning: listening on 0.0.0.0 without a token: anyone who reaches this port can use the API. Set "
            "NLA_API_TOKEN to require 'Authorization: Bearer <token>'.", refused]), open_.stderr
        guarded = serve_cli("--host", "0.0.0.0", "--port", str(port), token="s3cret")
        assert (guarded.returncode, guarded.stderr.splitlines()) == (2, [refused]), guarded.stderr


def test_only_the_tokens_hash_leaves_the_cli_process(server):
    """No process the server started (Ray's own, the replicas) holds the token, in its environment or its command
    line; the replicas check requests against its SHA-256 (a right token passes, a wrong one does not)."""
    started = {pid: cmd for pid, cmd in process_tree(server.pid).items() if pid != server.pid}
    assert any("ServeReplica:nla:ingress" in cmd for cmd in started.values()), started  # the replicas are here
    holders = []
    for pid, cmd in started.items():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:  # ended meanwhile
            continue
        if TOKEN.encode() in environ or TOKEN in cmd:
            holders.append(cmd)
    assert holders == []
    assert server.call("/v1/models")[0] == 200 and server.call("/v1/models", token=TOKEN + "x")[0] == 401


def test_query_memory_and_result_size_limits(server):
    """The server runs with limits.query_memory_limit=64MB (61.0 MiB) and the default query_max_bytes (16 MiB)."""
    status, err = server.call("/v1/query", {"sql": "SELECT max(l[1]) FROM (SELECT list(range ORDER BY range DESC) l "
                                                   "FROM range(20000000))"})
    assert status == 400 and err["error"].startswith("query ran out of its memory limit (Out of Memory Error: "), err
    assert "MiB/61.0 MiB used)). Fix: aggregate or filter more" in err["error"], err
    status, err = server.call("/v1/query", {"sql": "SELECT repeat('x', 1000000) AS s FROM range(100)"})
    assert (status, err["error"]) == (400, "the result is over 16,777,216 bytes after 32 rows. Fix: select fewer or "
                                           "shorter columns (e.g. left(explanation, 200)), or lower the limit."), err
    status, body = server.call("/v1/query", {"sql": "SELECT repeat('x', 1000000) AS s FROM range(16)"})
    assert (status, len(body["rows"])) == (200, 16)  # 16,000,064 bytes: under the limit
