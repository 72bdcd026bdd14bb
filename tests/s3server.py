"""A real S3-compatible server on loopback for the tests: moto's standalone server (`moto_server`) run as a separate
process and spoken to over HTTP, exactly as deltalake, pyarrow and DuckDB speak to S3. Not an in-process mock:
nothing here patches a client. By hand: `moto_server -H 127.0.0.1 -p 5055` (see docs/object-store.md).

Also a TCP forwarder to put in front of it, whose endpoint can go down and come back: moto keeps its objects in
memory only, so a store restarted with its data (as MinIO or Ceph restart) is an endpoint that refuses connections
and cuts the open ones for a while, then answers again with everything it had."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import threading
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen
    log: Path  # the server's request log (one line per request, with its HTTP status)

    def refused_commits(self) -> int:
        """Delta log entries the store refused with 412 Precondition Failed: a conditional put (If-None-Match) that
        lost the race to another writer, which deltalake then retries at the next version."""
        return sum(1 for ln in self.log.read_text(errors="replace").splitlines()
                   if '"PUT ' in ln and "_delta_log" in ln and '" 412 ' in ln)

    def env(self) -> dict[str, str]:
        """The environment a user sets for an S3-compatible endpoint (what nla.lake.storage reads)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ALLOW_HTTP": "true"}

    def create_bucket(self, name: str) -> None:
        """PUT /<bucket> (moto's server accepts unsigned requests, so no SDK is needed)."""
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).read()

    def new_bucket(self, hint: str) -> str:
        """A new empty bucket named after `hint`, for one test's objects. moto lists a bucket by walking every key in
        it, and delta-rs lists a table's log each time it loads one: in a bucket shared by the session's tests, each
        listing paid for every object the tests before had written."""
        name = f"{re.sub(r'[^a-z0-9]+', '-', hint.lower()).strip('-')[:48]}-{secrets.token_hex(3)}"
        self.create_bucket(name)
        return name


def enable_user(server: S3Server) -> dict[str, str]:
    """On a check_auth server: an IAM user allowed s3:*, with a key; returns server.env() with that key."""
    import json

    import boto3

    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                       aws_secret_access_key=SECRET_KEY)
    iam.create_user(UserName="nla")
    iam.put_user_policy(UserName="nla", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="nla")["AccessKey"]
    return {**server.env(), "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(port: int | None = None, timeout_s: float = 60.0, *, check_auth: bool = False) -> Iterator[S3Server]:
    """Start `moto_server` on 127.0.0.1:<free port>, wait until it answers, stop it (by its pid) afterwards.
    check_auth: the server checks signatures and keys (moto's IAM auth); call enable_user() first thing."""
    port = port or free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    # moto's IAM auth starts after this many requests: enough to create one user, its policy and its key
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if check_auth else {})}
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    server = S3Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, f"moto_server exited with {proc.returncode}; is moto[server] installed?"
            try:
                urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto_server did not answer on port {port} in {timeout_s} s"
                time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


class Forwarder:
    """127.0.0.1:<port> forwarded to `target` (host, port), byte for byte, one thread pair per connection. down():
    the listening socket closes (new connections are refused) and every open connection is cut; up(): it listens
    again on the same port. `cut` counts connections cut by down()."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port, self.cut = target, free_port(), 0
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock, self._open = threading.Lock(), set()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port at once
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._open = self._open, set()
        self.cut += len(conns) // 2
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            done = threading.Semaphore(0)  # released once per direction that ended
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, done), daemon=True).start()
            threading.Thread(target=self._close, args=(client, server, done), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # the other side sees the end of this direction
        except OSError:
            pass  # cut by down(), or the peer went away
        finally:
            done.release()

    def _close(self, client: socket.socket, server: socket.socket, done: threading.Semaphore) -> None:
        done.acquire()
        done.acquire()
        with self._lock:
            self._open -= {client, server}
        client.close()
        server.close()
