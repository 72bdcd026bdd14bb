"""Real Ray clusters for tests: `ray start --block` nodes, each with its own temp dir and free loopback ports, and a
teardown that ends exactly the processes descended from them, by pid. Never `ray stop` here: it ends every Ray on
the machine, other people's test clusters included. Ray 2.60 turns token auth on where a token file exists, so a
cluster and its clients share a fresh token (`Cluster.env`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# ports Ray would otherwise take at fixed defaults (52365, 10001, 8265) or pick itself: chosen free per node here
NODE_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                   "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open while choosing, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Cluster:
    address: str  # GCS address, what RAY_ADDRESS points at
    env: dict[str, str]  # the token every client of this cluster needs
    nodes: list[subprocess.Popen]
    dirs: list[str]

    def client_env(self) -> dict[str, str]:
        """The variables a driver sets to join this cluster: its address and token."""
        return {"RAY_ADDRESS": self.address, **{k: self.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}


def start_node(args: list[str], temp_dir: str, env: dict[str, str], ports: list[int],
               cpus: int) -> subprocess.Popen:
    cmd = [RAY, "start", "--block", "--temp-dir", temp_dir, "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
           "--num-cpus", str(cpus), "--object-store-memory", str(128 * 2**20), *args]
    for flag, port in zip(NODE_PORT_FLAGS, ports, strict=True):
        cmd += [flag, str(port)]
    with open(Path(temp_dir) / "ray-start.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(cluster: Cluster) -> None:
    """End this cluster's processes and nothing else: every descendant of its `ray start`s (GCS, raylets,
    agents, and the workers, which Ray puts in process groups of their own), SIGTERM first, SIGKILL after 2 s."""
    import psutil

    procs = []
    for p in cluster.nodes:
        try:
            procs += [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=2)  # draining would wait up to 30 s
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    for p in cluster.nodes:
        p.wait()
    for d in cluster.dirs:
        shutil.rmtree(d, ignore_errors=True)


STARTED = "Ray runtime started."  # what `ray start` prints once its node is registered with the GCS


class NodeDidNotStart(Exception):
    pass


def wait_started(node: subprocess.Popen, log: Path, seconds: float) -> None:
    """Until `ray start` says its node is up. It gives the raylet a fixed 30 s to register with the GCS and then
    ends the node (and a head's GCS with it): on a loaded 2-core machine that happens, and a cluster whose GCS port
    merely opened would be dead by the time a test joins it."""
    def said() -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    deadline = time.time() + seconds
    while time.time() < deadline:
        if STARTED in said():
            return
        if node.poll() is not None:
            raise NodeDidNotStart(f"`ray start` exited ({node.returncode}) before its node was up:\n{said()[-3000:]}")
        time.sleep(0.25)
    raise NodeDidNotStart(f"`ray start` did not bring its node up in {seconds:.0f} s:\n{said()[-3000:]}")


def start(nodes: list[tuple[int, dict[str, float]]], dashboard: bool) -> Cluster:
    """One `ray start` per (CPUs, custom resources) in nodes, each up before the next starts; a cluster that did not
    come up is stopped before NodeDidNotStart is raised."""
    n = len(NODE_PORT_FLAGS)
    port, client_port, dashboard_port, *node_ports = free_ports(3 + n * len(nodes))  # all at once: no port twice
    # no AWS_* either: as on a real cluster, the nodes hold no credentials of the tests' S3 server, so whatever
    # reaches an s3:// lake or corpus from an actor does it with the storage options its driver handed over
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("AWS_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # the log monitor looks for new worker log files every 0.5 s, not every 0.1 s (Ray's own backoff past 1,000
    # files): a session's cluster gathers hundreds, and globbing them 10 times a second took ~13 CPU-seconds a suite
    env["RAY_LOG_MONITOR_MANY_FILES_THRESHOLD"] = "0"
    c = Cluster(f"127.0.0.1:{port}", env, [], [tempfile.mkdtemp(prefix="nla-ray-") for _ in nodes])
    ui = ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port)] \
        if dashboard else ["--include-dashboard", "false"]
    try:
        for i, (cpus, resources) in enumerate(nodes):
            args = ["--head", "--port", str(port), "--ray-client-server-port", str(client_port), *ui] if i == 0 \
                else ["--address", c.address]
            if resources:
                args += ["--resources", json.dumps(resources)]
            c.nodes.append(start_node(args, c.dirs[i], env, node_ports[i * n:(i + 1) * n], cpus))
            wait_started(c.nodes[i], Path(c.dirs[i]) / "ray-start.log", 180)
    except BaseException:
        stop(c)
        raise
    return c


@contextmanager
def running(nodes: list[tuple[int, dict[str, float]]], *, dashboard: bool = False) -> Iterator[Cluster]:
    """A cluster of one `ray start` per (CPUs, custom resources) in nodes, the first the head (with the dashboard,
    which serves the state API, on a free port when asked); started again (up to three times, on new ports) when a
    node did not come up; stopped on exit."""
    for attempt in (1, 2, 3):
        try:
            c = start(nodes, dashboard)
            break
        except NodeDidNotStart as e:
            if attempt == 3:
                raise
            print(f"[ray] a test cluster's node did not come up (attempt {attempt} of 3), starting it again: "
                  f"{str(e).splitlines()[-1]}", file=sys.stderr)
    try:
        yield c
    finally:
        stop(c)
