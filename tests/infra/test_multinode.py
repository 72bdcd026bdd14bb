"""A real two-node Ray cluster on one machine runs the labeling job; the lake equals the single-node run's.

The head advertises the custom resource `head_node`, the worker `model_node`. The job pins the read stage to the
head and the three model stages (fuse=false: one pool each, the GPU layout) to the worker through
`StageResources.resources`; Ray's state API, asked after the run, must show every model actor on the worker node and
the reader on the head. The reference is the toy default (fused stages) on a local Ray of its own: the same act_ids,
vectors, greedy explanations and statuses, and mse within 1e-5.

Each node is its own `ray start --block` with its own temp dir and ports (the dashboard, which serves the state API,
on a free loopback port), and teardown ends exactly the processes descended from these two, by pid. Never `ray stop`
here: it ends every Ray on the machine, other people's test clusters included. Ray 2.60 turns token auth on where a token file
exists, so the cluster and its clients share a fresh token.
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
from dataclasses import dataclass
from pathlib import Path

import pytest

from nla.lake.query import LakeQuery
from nla.lake.store import Lake

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[2]
# ports Ray would otherwise take at fixed defaults (52365, 10001, 8265) or pick itself: chosen free per node here
NODE_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                   "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
# the model stages on the worker (1 CPU: 0.25 + one AV actor of 0.5 + 0.25), the reader on the head
PLACEMENT = ["fuse=false", "read.resources={head_node: 0.25}", "extractor.resources={model_node: 0.25}",
             "explainer.concurrency=1", "explainer.resources={model_node: 0.5}", "explainer.num_cpus=0.5",
             "scorer.resources={model_node: 0.25}"]
MODEL_STAGES = ("ExtractStage", "ExplainStage", "ScoreStage")


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


def start_node(args: list[str], temp_dir: str, env: dict[str, str], ports: list[int]) -> subprocess.Popen:
    cmd = [RAY, "start", "--block", "--temp-dir", temp_dir, "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
           "--num-cpus", "1", "--object-store-memory", str(128 * 2**20), *args]
    for flag, port in zip(NODE_PORT_FLAGS, ports, strict=True):
        cmd += [flag, str(port)]
    with open(Path(temp_dir) / "ray-start.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(cluster: Cluster) -> None:
    """End this cluster's processes and nothing else: every descendant of its two `ray start`s (GCS, raylets,
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


def wait_for_port(port: int, seconds: float, head: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and head.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"the Ray head did not open port {port}:\n{log.read_text()[-3000:]}")


def ray_state(cluster: Cluster) -> dict:
    """Nodes (id -> custom resources) and every actor the cluster ran (class, node), from Ray's state API."""
    script = """if True:
        import json, sys, time
        from ray.util.state import list_actors, list_nodes
        address = sys.argv[1]
        for _ in range(40):  # the worker registers a moment after the head
            nodes = {n.node_id: n.resources_total for n in list_nodes(address=address) if n.state == "ALIVE"}
            if len(nodes) == 2:
                break
            time.sleep(0.25)
        actors = [{"name": a.class_name, "repr": a.repr_name, "node": a.node_id}
                  for a in list_actors(address=address, detail=True, limit=1000)]
        print(json.dumps({"nodes": nodes, "actors": actors}))
    """
    p = subprocess.run([sys.executable, "-c", script, cluster.address], capture_output=True, text=True,
                       env=cluster.env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster():
    n = len(NODE_PORT_FLAGS)
    port, client_port, dashboard_port, *node_ports = free_ports(3 + 2 * n)  # all at once: no port twice
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    c = Cluster(f"127.0.0.1:{port}", env, [], [tempfile.mkdtemp(prefix="nla-ray-head-"),
                                                 tempfile.mkdtemp(prefix="nla-ray-worker-")])
    try:
        c.nodes.append(start_node(["--head", "--port", str(port), "--ray-client-server-port", str(client_port),
                                   "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                   "--dashboard-port", str(dashboard_port), "--resources", '{"head_node": 1}'],
                                  c.dirs[0], env, node_ports[:n]))
        wait_for_port(port, 60, c.nodes[0], Path(c.dirs[0]) / "ray-start.log")
        c.nodes.append(start_node(["--address", c.address, "--resources", '{"model_node": 1}'], c.dirs[1], env,
                                  node_ports[n:]))
        yield c
    finally:
        stop(c)


def label(corpus: Path, lake: Path, env: dict[str, str], *overrides: str) -> subprocess.Popen:
    """Start `python -m jobs.label` on the toy config; finish() waits for it."""
    cmd = [sys.executable, "-m", "jobs.label", "--config", "jobs/configs/toy.yaml", f"input={corpus}", f"lake={lake}",
           *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(job: subprocess.Popen) -> str:
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 0, out[-5000:]
    return out


def lake_rows(lake: Path) -> tuple[list[dict], list[dict]]:
    with LakeQuery(Lake(lake)) as q:
        acts = q.run("SELECT act_id, doc_id, position, vector FROM activations ORDER BY act_id", limit=None).to_pylist()
        expl = q.run("SELECT act_id, sample, explanation, status, mse FROM explanations ORDER BY act_id, sample",
                     limit=None).to_pylist()
    return acts, expl


def test_label_across_two_nodes_equals_single_node(cluster, toy_kit, tmp_path):
    from nla.toy.shards import write_corpus

    corpus = tmp_path / "corpus"
    write_corpus(corpus, docs=40, shards=2, seed=11)
    # the reference: the toy default (fused stages) on a new local Ray of its own (RAY_ADDRESS=local: never a
    # `ray start` cluster found on the machine), run alongside to save wall time
    single = label(corpus, tmp_path / "lake-1node", {**cluster.env, "RAY_ADDRESS": "local"})
    multi = label(corpus, tmp_path / "lake-2nodes", {**cluster.env, "RAY_ADDRESS": cluster.address}, *PLACEMENT)
    out = finish(multi)
    assert out.count("[commit] shard") == 2, out[-3000:]
    finish(single)

    state = ray_state(cluster)
    worker = [n for n, res in state["nodes"].items() if "model_node" in res]
    head = [n for n, res in state["nodes"].items() if "head_node" in res]
    assert len(worker) == len(head) == 1 and worker != head, state["nodes"]
    ran = {stage: {a["node"] for a in state["actors"] if stage in a["repr"] + a["name"]}
           for stage in (*MODEL_STAGES, "ReadShard")}
    for stage in MODEL_STAGES:
        assert ran[stage] == set(worker), f"{stage} actors ran on {ran[stage]}, not on the worker {worker}"
    assert ran["ReadShard"] == set(head), f"ReadShard actors ran on {ran['ReadShard']}, not on the head {head}"

    (acts_m, expl_m), (acts_s, expl_s) = lake_rows(tmp_path / "lake-2nodes"), lake_rows(tmp_path / "lake-1node")
    assert len(acts_m) == len(expl_m) == 240
    assert [(a["act_id"], a["doc_id"], a["position"]) for a in acts_m] == \
        [(a["act_id"], a["doc_id"], a["position"]) for a in acts_s]
    assert max(abs(x - y) for a, b in zip(acts_m, acts_s) for x, y in zip(a["vector"], b["vector"])) < 1e-4
    # greedy decoding: the same explanation for every key; scores agree to float noise (batching changes padding)
    assert [(e["act_id"], e["sample"], e["explanation"], e["status"]) for e in expl_m] == \
        [(e["act_id"], e["sample"], e["explanation"], e["status"]) for e in expl_s]
    assert max(abs(x["mse"] - y["mse"]) for x, y in zip(expl_m, expl_s) if x["mse"] is not None) < 1e-5
