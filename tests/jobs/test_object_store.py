"""The lake on an object store, for real: `nla label` (toy kit) reads its corpus from s3:// and writes into s3:// on
a moto server run as its own process on loopback; a rerun skips committed shards; `nla query`, `nla search`,
`nla mine` read it back; a missing bucket and an unreachable endpoint are one clear error before any model loads.
Concurrent committers on one s3 lake: tests/reliability/test_object_store.py. One server (the session's) and one
labeled lake serve the whole module."""

from __future__ import annotations

import os

import pytest

from nla.labeling.identity import name_of
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.conftest import S3_BUCKET as BUCKET
from tests.jobs.test_label import job


@pytest.fixture(scope="module")
def labeled(s3, toy_kit, tmp_path_factory):
    """The corpus and the lake both on the store: the package's Ray cluster, whose nodes have no AWS_* variables,
    reads the shards with the options the driver resolved."""
    import pyarrow.fs as pafs

    from nla.lake.storage import object_path, s3_filesystem, storage_options
    from nla.toy.shards import write_corpus

    local = tmp_path_factory.mktemp("s3corpus")
    write_corpus(local, docs=40, shards=2, seed=78)
    bucket = s3.new_bucket("labeled")
    corpus = f"s3://{bucket}/corpus"
    pafs.copy_files(str(local), object_path(corpus), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_filesystem(storage_options(corpus)))
    lake = f"s3://{bucket}/labeled"
    p = job("label", f"input={corpus}", "--lake", lake)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return corpus, lake, p


def test_label_into_s3_then_rerun_skips(labeled):
    corpus, lake, first = labeled
    assert "[commit] shard part-0000.jsonl" in first.stdout
    assert {name_of(u) for u in Lake(lake).committed_shards("explanations")} == {"part-0000.jsonl", "part-0001.jsonl"}
    assert {r["path"] for r in Lake(lake).ledger("explanations")} == {f"{corpus}/part-000{i}.jsonl" for i in (0, 1)}
    with LakeQuery(Lake(lake)) as q:
        before = q.run("SELECT count(*) n, count(DISTINCT act_id) u FROM explanations").to_pylist()[0]
    assert before["n"] == before["u"] > 50
    again = job("label", f"input={corpus}", "--lake", lake)
    assert "2 already committed under this recipe" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    with LakeQuery(Lake(lake)) as q:
        assert q.run("SELECT count(*) n, count(DISTINCT act_id) u FROM explanations").to_pylist()[0] == before


def test_query_search_mine_on_s3(labeled, capsys):
    """`nla query`, `search` and `mine` on the s3 lake, through `nla`'s entry point in this process (each `nla`
    process imports torch: ~2 CPU-s; the s3 lake through a real `nla` process: the labeling jobs above)."""
    from tests.inprocess import nla as nla_here

    def nla(*args: str) -> str:
        code, out, err = nla_here(capsys, *args)
        assert code == 0, out + err
        return out

    _, lake, _ = labeled
    assert "n" in nla("query", "SELECT count(*) AS n FROM labels", "--lake", lake)
    assert nla("search", 'The text is about weather.\n\nIt ends with "storm".', "-k", "3", "--lake", lake
               ).count("about") >= 1
    nla("mine", "--where", "mse >= 0", "--name", "hard_s3", "--limit", "10", "--lake", lake)
    assert Lake(lake).table("training_sets/hard_s3").to_pyarrow_table().num_rows == 10


def test_teach_then_train_on_an_s3_training_set(labeled, toy_kit, tmp_path):
    """mine -> `nla teach` (the toy teacher over HTTP) -> `nla train sft`, all reading and writing the s3 lake: the
    teach stage's reader and the Ray Train worker run on the package's cluster, whose nodes have no AWS_* variables."""
    import json

    from nla.lake.mine import mine
    from nla.toy.teacher import serve

    _, lake, _ = labeled
    mine(Lake(lake), where="status = 'ok'", name="s3_ok", limit=24)
    server = serve()
    try:
        taught = job("teach", "--data", "s3_ok", "--out", "s3_taught", "--lake", lake, "--teacher-url",
                     f"http://127.0.0.1:{server.server_address[1]}/v1")
    finally:
        server.shutdown()
    assert taught.returncode == 0 and "24 targets -> training_sets/s3_taught" in taught.stdout, \
        taught.stdout[-3000:] + taught.stderr[-3000:]
    out = tmp_path / "av"
    trained = job("train", "sft", "--role", "av", "--data", "s3_taught", "--from", str(toy_kit / "av"), "--out",
                  str(out), "--lake", lake, "--steps", "2", "sft.warmup_steps=1")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "on s3_taught (24 examples)" in trained.stdout and "registered" in trained.stdout
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    with LakeQuery(Lake(lake)) as q:
        reg = q.run("SELECT role, stage, path FROM checkpoints").to_pylist()
    assert reg == [{"role": "av", "stage": "sl", "path": str((out / "av").resolve())}]


@pytest.mark.parametrize("lake, env, match", [
    ("s3://no-such-bucket/x", {}, "no such bucket"),
    (f"s3://{BUCKET}/x", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "endpoint unreachable"),
])
def test_bad_store_is_one_clear_error(s3, toy_kit, lake, env, match):
    old = {k: os.environ[k] for k in env}
    os.environ.update(env)
    try:
        p = job("label", "input=/nonexistent", "--lake", lake)
    finally:
        os.environ.update(old)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and lake in last and match in last and "Fix:" in last, p.stderr[-2000:]


def test_serve_lake_reader_answers_from_s3(labeled, monkeypatch):
    """The server's lake deployment reads s3:// with the options the driver resolved, not its own environment (a
    replica on another node may have none): here the AWS_* variables are gone when it opens the lake."""
    import asyncio

    from nla.serve.lake import LakeReader

    _, lake, _ = labeled
    options = Lake(lake).storage_options
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(k)
    reader = LakeReader(lake, storage_options=options, timeout_s=10, refresh_s=60)
    info = asyncio.run(reader.info())
    assert info["root"] == lake and "explanations" in info["tables"]
    rows = asyncio.run(reader.query("SELECT count(*) AS n FROM explanations", 5))["rows"]
    assert rows[0]["n"] > 50


def test_wrong_credentials_is_one_clear_error(toy_kit, monkeypatch):
    """A server of its own that checks signatures and keys (moto's IAM auth): the right key writes; a wrong secret
    stops `nla label` with one line, and an unknown key id is named as such."""
    import boto3

    from nla.errors import NLALakeError
    from tests.s3server import enable_user, running

    with running(check_auth=True) as server:
        good = enable_user(server)
        boto3.client("s3", endpoint_url=server.endpoint, region_name=good["AWS_REGION"],
                     aws_access_key_id=good["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=good["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="guarded")
        for k, v in good.items():
            monkeypatch.setenv(k, v)
        Lake("s3://guarded/x").check_writable()
        with pytest.raises(NLALakeError, match="unknown access key"):
            Lake("s3://guarded/x", storage_options={"aws_access_key_id": "AKIANOSUCHKEY0000000"}).check_writable()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        p = job("label", "input=/nonexistent", "--lake", "s3://guarded/x")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and "s3://guarded/x" in last and "wrong secret key" in last and "Fix:" in last, last
