"""A real two-node Ray cluster on one machine runs the labeling job with its corpus and its lake on an object store
(the session's S3 server); the lake equals the single-node run's.

As on a real cluster the nodes share no folder and hold no credentials: they are started without AWS_* variables, the
job's driver runs in an empty folder of its own, and every stage runs on the worker node, so the reader there gets
the shards from s3:// with the storage options the driver resolved, and the driver commits to the s3:// lake. (In
label mode no actor touches the lake; the stage that does, for --from-activations, gets the same options.) The head
advertises the custom resource `head_node`, the worker `model_node`; the stages (fuse=false: one pool each, the GPU
layout) are pinned to the worker through `StageResources.resources`, and Ray's state API, asked after the run, must
show every actor there. The reference is the toy default (fused stages, a local corpus and lake) labeled in the
test's process without Ray: the same act_ids, vectors, greedy explanations and statuses, and mse within 1e-5.

Each node is its own `ray start --block` (tests/raycluster.py), the head with the dashboard, which serves the state
API.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.raycluster import Cluster, running

ROOT = Path(__file__).resolve().parents[2]
# every stage on the worker (2 CPUs: reader 0.25, extract 0.25, one AV actor of 0.5, score 0.25)
PLACEMENT = ["fuse=false", "read.resources={model_node: 0.25}", "extractor.resources={model_node: 0.25}",
             "explainer.concurrency=1", "explainer.resources={model_node: 0.5}", "explainer.num_cpus=0.5",
             "scorer.resources={model_node: 0.25}"]
STAGES = ("ReadShard", "ExtractStage", "ExplainStage", "ScoreStage")


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
    with running([(1, {"head_node": 1}), (2, {"model_node": 2})], dashboard=True) as c:
        yield c


def label(corpus: Path | str, lake: Path | str, env: dict[str, str], *overrides: str,
          cwd: Path = ROOT) -> subprocess.Popen:
    """Start `python -m nla.jobs.label` on the toy config in `cwd`; finish() waits for it."""
    cmd = [sys.executable, "-m", "nla.jobs.label", "--config", str(ROOT / "jobs/configs/toy.yaml"), f"input={corpus}",
           f"lake={lake}", *overrides]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "PYTHONPATH": str(ROOT)})


def finish(job: subprocess.Popen) -> str:
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 0, out[-5000:]
    return out


def lake_rows(lake: Path | str) -> tuple[list[dict], list[dict]]:
    with LakeQuery(Lake(lake)) as q:
        acts = q.run("SELECT act_id, doc_id, position, vector FROM activations ORDER BY act_id", limit=None).to_pylist()
        expl = q.run("SELECT act_id, sample, explanation, status, mse FROM explanations ORDER BY act_id, sample",
                     limit=None).to_pylist()
    return acts, expl


def test_label_across_two_nodes_equals_single_node(cluster, toy_kit, s3, bucket, tmp_path):
    import pyarrow.fs as pafs

    from nla.lake.storage import object_path, s3_filesystem, storage_options
    from nla.toy.shards import write_corpus
    corpus, remote = tmp_path / "corpus", f"s3://{bucket}/multinode/corpus"
    write_corpus(corpus, docs=40, shards=2, seed=11)
    pafs.copy_files(str(corpus), object_path(remote), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_filesystem(storage_options(remote)))
    lake, driver_dir = f"s3://{bucket}/multinode/lake", tmp_path / "driver"
    driver_dir.mkdir()
    multi = label(remote, lake, {**cluster.env, **s3.env(), "RAY_ADDRESS": cluster.address}, *PLACEMENT,
                  cwd=driver_dir)
    # the reference, meanwhile: the toy default (fused stages, a local corpus and lake) in this process, without Ray
    # (tests/inprocess.py; the job's own plan, stages and committer)
    from tests.inprocess import label_fused

    label_fused(corpus, tmp_path / "lake-1node")
    out = finish(multi)
    assert out.count("[commit] shard") == 2, out[-3000:]
    assert not any(driver_dir.iterdir()), list(driver_dir.iterdir())  # nothing local: corpus and lake are on s3

    state = ray_state(cluster)
    worker = [n for n, res in state["nodes"].items() if "model_node" in res]
    head = [n for n, res in state["nodes"].items() if "head_node" in res]
    assert len(worker) == len(head) == 1 and worker != head, state["nodes"]
    ran = {stage: {a["node"] for a in state["actors"] if stage in a["repr"] + a["name"]} for stage in STAGES}
    for stage in STAGES:
        assert ran[stage] == set(worker), f"{stage} actors ran on {ran[stage]}, not on the worker {worker}"

    (acts_m, expl_m), (acts_s, expl_s) = lake_rows(lake), lake_rows(tmp_path / "lake-1node")
    assert len(acts_m) == len(expl_m) == 240
    assert [(a["act_id"], a["doc_id"], a["position"]) for a in acts_m] == \
        [(a["act_id"], a["doc_id"], a["position"]) for a in acts_s]
    assert max(abs(x - y) for a, b in zip(acts_m, acts_s) for x, y in zip(a["vector"], b["vector"])) < 1e-4
    # greedy decoding: the same explanation for every key; scores agree to float noise (batching changes padding)
    assert [(e["act_id"], e["sample"], e["explanation"], e["status"]) for e in expl_m] == \
        [(e["act_id"], e["sample"], e["explanation"], e["status"]) for e in expl_s]
    assert max(abs(x["mse"] - y["mse"]) for x, y in zip(expl_m, expl_s) if x["mse"] is not None) < 1e-5
