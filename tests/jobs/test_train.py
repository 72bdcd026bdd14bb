"""Retraining on the toy kit (GRPO's pieces: tests/nla/test_grpo.py): SFT and GRPO through real Ray Train (1 and 2 workers, DDP and FSDP),
resume after a worker is killed, targets (best-of-k and a teacher over HTTP), the retrain loop, and bad data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nla.lake.mine import mine
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.jobs.test_label import ONE_ACTOR

def nla(*args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "nla.cli.main", *args]
    # RAY_ADDRESS: the package's cluster. No preemption watcher (an actor per Ray Train run, ~2 CPU-seconds to
    # start; there is nothing to preempt here): Ray Train hands the setting from the driver to its controller
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def lake(tmp_path_factory, toy_kit):
    from nla.toy.shards import write_corpus

    root = tmp_path_factory.mktemp("train")
    write_corpus(root / "corpus", docs=120, shards=3, seed=31)  # 720 activations: the retrain loop relabels them all
    p = nla("label", f"input={root / 'corpus'}", "--lake", str(root / "lake"), ONE_ACTOR)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    lk = Lake(root / "lake")
    mine(lk, where="status = 'ok'", name="all_ok")
    mine(lk, where="status = 'ok' AND mse > 0.5", name="hard", limit=200)
    return root / "lake"


def sft_two_workers(role: str, strategy: str, lake, toy_kit, out, *extra: str) -> dict:
    p = nla("train", "sft", "--role", role, "--from", str(toy_kit / role), "--out", str(out), "--lake", str(lake),
            "--workers", "2", "scaling.cpus_per_worker=0.5", f"scaling.strategy={strategy}", *extra)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _ddp_rank(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    """One of two gloo ranks running run_sft under torch's DDP (what ray.train.torch.prepare_model wraps a model in),
    without Ray: the reference the FSDP job is compared with."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nla.config import load_config
    from nla.train.config import TrainJobConfig
    from nla.train.run import WorkerEnv, run_sft

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = load_config(TrainJobConfig, None, overrides)
    run_sft(cfg, WorkerEnv(rank=rank, world=world, wrap=DistributedDataParallel, log=lambda m: None), Path(out))
    dist.destroy_process_group()


def test_sft_av_two_workers_fsdp_equals_ddp(lake, toy_kit, tmp_path):
    """AV SFT through Ray Train under FSDP2 (gloo), 2 workers, against the same run_sft under DDP on two gloo ranks
    without Ray: the same final eval loss (1e-4 relative; here 0.230881 both, 1e-7 apart; a Ray Train FSDP run whose
    workers do not sync ended 8% off on a 240-document lake). The curve is written step by step and the checkpoint
    registered; the FSDP checkpoint (gathered to rank 0, written in the release layout) loads with NLAClient and
    explains. (DDP through Ray Train: the resume test below; FSDP against DDP for the AR too:
    tests/nla/test_train.py; one worker: the retrain loop's SFT.)"""
    args = ("--data", "all_ok", "--steps", "4", "limit=160", "sft.batch_size=8", "sft.lr=3e-4", "sft.warmup_steps=1",
            "sft.log_every=1", "scaling.checkpoint_every=2")
    fsdp = sft_two_workers("av", "fsdp", lake, toy_kit, tmp_path / "fsdp", *args)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = ["algo=sft", "role=av", "data=all_ok", f"init={toy_kit / 'av'}", f"lake={lake}", "sft.steps=4",
                 *args[4:]]
    torch.multiprocessing.spawn(_ddp_rank, args=(2, port, overrides, str(tmp_path / "ddp")), nprocs=2)
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert (fsdp["workers"], ddp["workers"], fsdp["train_examples"]) == (2, 2, ddp["train_examples"]), (ddp, fsdp)
    assert fsdp["eval_loss"] == pytest.approx(ddp["eval_loss"], rel=1e-4), (ddp, fsdp)
    assert fsdp["last_loss"] == pytest.approx(ddp["last_loss"], rel=1e-4)
    curve = [json.loads(x) for x in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [1, 2, 3, 4], curve
    with LakeQuery(Lake(lake)) as q:
        reg = q.run("SELECT role, stage, path FROM checkpoints").to_pylist()
    assert {"role": "av", "stage": "sl", "path": str((tmp_path / "fsdp" / "av").resolve())} in reg
    from nla.client import NLAClient

    c = NLAClient(tmp_path / "fsdp" / "av")
    assert c.meta.stage == "sl" and (tmp_path / "fsdp" / "av" / "config.json").is_file()
    assert len(c.explain(torch.randn(2, c.meta.d_model), temperature=0, max_new_tokens=8)) == 2


def test_grpo_two_workers_fsdp(lake, toy_kit, tmp_path):
    """GRPO through Ray Train with the policy, reference and AR sharded (FSDP2, gloo), 2 workers: a reward line per
    step, evals at the start and the end, both checkpoints registered as stage rl. The Ray Train checkpoint holds the
    whole gathered weights, equal to the release checkpoint written at the end, which loads. (GRPO under DDP, one
    all-reduce a step: tests/nla/test_grpo.py; DDP through Ray Train: the resume test below.)"""
    out = tmp_path / "grpo-fsdp"
    p = nla("train", "grpo", "--data", "all_ok", "--from", str(toy_kit / "av"), "--ar", str(toy_kit / "ar"),
            "--out", str(out), "--lake", str(lake), "--steps", "2", "--workers", "2", "scaling.cpus_per_worker=0.5",
            "scaling.strategy=fsdp", "grpo.batch_size=2", "grpo.group=4", "grpo.max_new_tokens=48", "eval_samples=8",
            "grpo.log_every=1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[grpo] step 1/2 reward" in p.stdout and "[grpo] step 2/2 reward" in p.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["workers"] == 2 and [e["step"] for e in m["evals"]] == [0, 2]
    with LakeQuery(Lake(lake)) as q:
        stages = q.run("SELECT role, stage, path FROM checkpoints WHERE stage = 'rl'").to_pylist()
    assert {(r["role"], r["path"]) for r in stages} >= {("av", str((out / "av").resolve())),
                                                         ("ar", str((out / "ar").resolve()))}, stages
    from nla import hf
    from nla.ar import ARModel
    from nla.client import NLAClient

    state = torch.load(sorted(out.glob("ray_train/*/checkpoint_*/state.pt"))[-1], weights_only=False)
    assert state["trainer"]["steps_done"] == 2 and state["trainer"]["av_opt"]["state"]
    saved = hf.load_causal_lm(out / "av").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in state["policy"].items())
    ar = ARModel.from_pretrained(out / "ar")
    assert torch.equal(ar.value_head.weight, state["ar"]["value_head.weight"])
    assert len(NLAClient(out / "av").explain(torch.randn(1, ar.d_model), temperature=0, max_new_tokens=8)) == 1


def _cmdline(proc) -> str:
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # it ended meanwhile
        return ""


def test_worker_killed_mid_run_resumes_from_checkpoint(lake, toy_kit, tmp_path, shared_ray):
    """AR SFT through Ray Train, 2 workers under DDP (gloo), one of them SIGKILLed after the step-20 checkpoint: Ray
    Train restarts the group, which resumes from the last registered checkpoint and ends at step 40. The learning
    curve is written step by step (from the resume point again after the kill), the loss falls, and the weights load
    in the release layout. (FSDP through Ray Train: the AV SFT and GRPO tests above; the AR under FSDP against DDP,
    and a resume in one process: tests/nla/test_train.py.)"""
    out = tmp_path / "kill"
    p = nla("train", "sft", "--role", "ar", "--data", "all_ok", "--from", str(toy_kit / "ar"), "--out", str(out),
            "--lake", str(lake), "--steps", "40", "--workers", "2", "scaling.cpus_per_worker=0.5",
            "scaling.strategy=ddp", "scaling.checkpoint_every=10", "sft.batch_size=8", "sft.lr=1e-3",
            "sft.warmup_steps=1", "sft.log_every=1", wait=False)
    lines, killed = [], []
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        line = p.stdout.readline()
        lines.append(line)
        if "[ckpt] step 20 saved" in line and not killed:
            import psutil

            # one worker of this package's cluster (descendants of its `ray start`s, by pid): nothing else here
            ours = [c for node in shared_ray.nodes for c in psutil.Process(node.pid).children(recursive=True)]
            killed = [c.pid for c in ours if "RayTrainWorker" in _cmdline(c)][:1]
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
    out_text = "".join(lines) + p.stdout.read()
    assert p.wait(600) == 0, out_text[-4000:]
    assert killed, "no Ray Train worker process was found to kill"
    assert "resumed from step" in out_text, out_text[-4000:]
    resumed = int(out_text.split("resumed from step ")[1].split()[0])
    # the controller registers a reported checkpoint asynchronously: the resume point is step 10 or 20
    m = json.loads((out / "metrics.json").read_text())
    assert resumed in (10, 20) and m["resumed_from"] == resumed and m["workers"] == 2, m
    curve = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in curve]
    assert steps[:20] == list(range(1, 21)) and steps[-(40 - resumed):] == list(range(resumed + 1, 41)), steps
    losses = [r["loss"] for r in curve]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    from nla.ar import ARModel

    assert ARModel.from_pretrained(out / "ar").d_model == 128  # rank 0's weights, release layout


def test_targets_teacher(lake):
    """Teacher targets over HTTP (an unreachable teacher is refused before anything is written). Best-of-k targets:
    test_best_of_k_targets, on the retrain loop's."""
    from nla.toy.teacher import serve

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    p = nla("teach", "--data", "hard", "--out", "hard_nowhere", "--teacher-url", f"http://127.0.0.1:{closed}/v1",
            "--lake", str(lake))
    assert p.returncode == 2 and p.stderr.splitlines()[-1].startswith(
        f"error: teacher http://127.0.0.1:{closed}/v1 unreachable (<urlopen error [Errno 111] Connection refused>). "
        "Fix: start the endpoint"), p.stderr[-2000:]
    assert not Lake(lake).exists("training_sets/hard_nowhere")
    server = serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        p = nla("teach", "--data", "hard", "--out", "hard_teacher", "--teacher-url", url, "--lake", str(lake))
    finally:
        server.shutdown()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ds = Lake(lake).table("training_sets/hard_teacher").to_pyarrow_dataset()
    rows = ds.to_table(columns=["explanation", "av"]).to_pylist()
    assert len(rows) == Lake(lake).table("training_sets/hard").to_pyarrow_dataset().count_rows()
    assert all(r["explanation"].startswith("The text is about") for r in rows)
    assert rows[0]["av"] == "teacher:nla-toy-teacher"


@pytest.mark.parametrize("args, match", [
    (["role=av", "data=nope"], "not found"),
    (["role=av", "data=activations"], "no explanation"),
    (["role=ar", "data=hard", "init=AV"], "'av' checkpoint"),
    (["role=av", "data=hard", "init=/nonexistent/av"], "nla_meta.yaml"),
    (["role=av", "data=hard", "scaling.strategy=zero3"], "scaling.strategy"),
])
def test_bad_train_input(lake, toy_kit, args, match, capsys):
    """Each is refused with exit 2 and one line naming the fix, before Ray starts: `python -m nla.jobs.train` (what
    `nla train sft` hands over to) called in this process, which saves a Python start with torch per case; the same
    refusal through the `nla` command and its own process: test_bad_data_empty_and_wrong_d."""
    import nla.jobs.train

    args = [f"init={toy_kit / 'av'}" if a == "init=AV" else a for a in args]
    code = nla.jobs.train.main(["--algo", "sft", *args, f"lake={lake}", "sft.steps=1"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert match in err and "Fix" in err and len(err.strip().splitlines()) == 1, err


def test_bad_data_empty_and_wrong_d(lake, make_base, tmp_path):
    """An empty training set and vectors of another d are refused before training starts."""
    from nla.checkpoint import init_pair
    from nla.errors import NLAInputError
    from nla.train.data import load_examples

    lk = Lake(lake)
    mine(lk, where="mse > 99", name="empty")
    with pytest.raises(NLAInputError, match="no usable rows"):
        load_examples(lk, "empty", d=128, need_explanations=True)
    av, _ = init_pair(make_base("llama"), 1, tmp_path / "small")  # d = 32
    p = nla("train", "sft", "--role", "av", "--data", "hard", "--from", str(av), "--lake", str(lake), "--steps", "1")
    assert p.returncode == 2 and "d=128" in p.stderr and "d_model is 32" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def retrained(lake, tmp_path_factory):
    """One `nla retrain` on the module's lake (last: it adds tables and relabels), read by the two tests below."""
    import yaml

    from nla.labeling.config import default_config

    out = tmp_path_factory.mktemp("retrained")
    # its labeling jobs (--input, then the relabels) with one AV actor, as every job of this package (ONE_ACTOR)
    cfg = yaml.safe_load(Path(default_config()).read_text(encoding="utf-8"))
    cfg["explainer"]["concurrency"] = 1
    (out / "label.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    p = nla("retrain", "--lake", str(lake), "--input", str(lake.parent / "corpus"), "--label-config",
            str(out / "label.yaml"), "--steps", "6", "--k", "2", "--eval-rows", "40", "--quantile", "0.6", "--out",
            str(out))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with LakeQuery(Lake(lake)) as q:
        run_id = q.run("SELECT run_id FROM runs WHERE job = 'retrain'").column("run_id")[0].as_py()
    return p, out, run_id.replace("-", "_")


def test_retrain_loop(lake, retrained):
    """label (fixture; --input finds it committed) -> mine hard -> best-of-k targets -> SFT -> relabel the held-out
    sets, recorded in runs."""
    p, out, _ = retrained
    assert "3 already committed under this recipe, 0 to do" in p.stdout  # --input labels first; the fixture's shards are skipped
    assert "hard_heldout" in p.stdout and "random_heldout" in p.stdout
    assert (out / "av" / "nla_meta.yaml").is_file()
    with LakeQuery(Lake(lake)) as q:
        row = q.run("SELECT status, throughput, recipes FROM runs WHERE job = 'retrain'").to_pylist()[0]
        recipes = json.loads(row["recipes"])
        before, after = recipes["explanations_before"], recipes["explanations_after"]
        n_acts = q.run("SELECT count(*) n FROM activations").column("n")[0].as_py()
        # the relabels are rows under their own recipes: every activation has the new AV's explanation
        per = {r["recipe"]: r["a"] for r in q.run("SELECT recipe, count(DISTINCT act_id) a FROM explanations "
                                                   "GROUP BY ALL").to_pylist()}
        assert per[after] == n_acts and per[before] == n_acts and before != after
    t = json.loads(row["throughput"])
    assert row["status"] == "ok"
    assert f"nla compare {before} {after}" in p.stdout
    print({k: v for k, v in t.items() if "heldout" in k})
    for k in ("hard_heldout", "random_heldout"):
        assert t[f"{k}_n"] > 1 and t[f"{k}_mse_after"] != t[f"{k}_mse_before"]
        assert abs(t[f"{k}_diff"] - (t[f"{k}_mse_after"] - t[f"{k}_mse_before"])) < 1e-9
    assert t["hard_heldout_mse_after"] < t["hard_heldout_mse_before"]  # retraining on hard examples helped there


def test_best_of_k_targets(lake, toy_kit, retrained):
    """The retrain loop's best-of-2 targets (`nla teach --method best-of-k`, which it runs on its mined hard set):
    only rows the AR now scores better than their mined explanation, each at its real AR mse."""
    from nla.client import NLACritic
    from nla.lake.schema import vectors_from_arrow

    tag = retrained[2]
    lk = Lake(lake)
    best = lk.table(f"training_sets/{tag}_targets").to_pyarrow_dataset(
        schema=lk.arrow_schema(f"training_sets/{tag}_targets")).to_table(
        columns=["act_id", "explanation", "mse", "vector", "av"])
    mined = dict(zip(*lk.table(f"training_sets/{tag}_hard_train").to_pyarrow_dataset().to_table(
        columns=["act_id", "mse"]).to_pydict().values()))
    got = best.to_pydict()
    assert 0 < len(got["act_id"]) <= len(mined) and set(got["av"]) == {"best-of-2"}
    assert all(m < mined[a] for a, m in zip(got["act_id"], got["mse"]))  # each one improved on its mined label
    mse, _ = NLACritic(toy_kit / "ar").score_batch(got["explanation"], vectors_from_arrow(best.column("vector")))
    np.testing.assert_allclose(got["mse"], mse.numpy(), atol=1e-4)  # the AR's real score of the kept target


def test_retrain_refuses_a_missing_input(tmp_path):
    lake = tmp_path / "fresh-lake"
    p = nla("retrain", "--lake", str(lake), "--input", str(tmp_path / "no-such-corpus"), "--steps", "2")
    assert p.returncode == 2 and "no-such-corpus" in p.stderr and "Fix" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
