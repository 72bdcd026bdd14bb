"""Corpus shards on an object store: the session's moto server (its own process on loopback) holds a copy of a local
corpus of every kind; listed and read through s3:// it gives the same shards, the same fingerprints (a shard is its
content, wherever it lives) and the same documents. A missing prefix or bucket, an unreachable endpoint and a store
lost while a shard is read are one clear error each."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from nla.errors import NLAInputError
from nla.labeling.corpus import ShardError, list_shards
from nla.lake.storage import object_path, s3_filesystem, storage_options
from tests.conftest import S3_BUCKET
from tests.nla.labeling.test_corpus import read_docs

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture(scope="module")
def corpus(s3, tmp_path_factory):
    """(local root, s3:// root, options): jsonl (one bad line), parquet, a txt in a subfolder, a hidden file, and
    beside them a Delta table and an HF datasets folder, copied object by object."""
    from deltalake import write_deltalake

    root = tmp_path_factory.mktemp("s3corpus")
    (root / "mixed").mkdir()
    (root / "mixed" / "j.jsonl").write_bytes(b'{"text": "one", "id": 1}\n\xff bad\n{"text": "two"}\n')
    pq.write_table(pa.table({"text": ["alpha beta", "gamma"], "id": ["a", "b"]}), root / "mixed" / "p.parquet")
    (root / "mixed" / "sub").mkdir()
    (root / "mixed" / "sub" / "t.txt").write_text("a whole file is one document")
    (root / "mixed" / ".tmp").mkdir()
    (root / "mixed" / ".tmp" / "half.jsonl").write_text('{"text": "half written"}\n')
    write_deltalake(str(root / "delta"), pa.table({"text": ["d1", "d2"]}))
    (root / "hf").mkdir()
    (root / "hf" / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))
    t = pa.table({"text": ["h1", "h2", "h3"]})
    with pa.ipc.new_stream(root / "hf" / "data-00000-of-00001.arrow", t.schema) as w:
        w.write_table(t)
    uri = f"s3://{S3_BUCKET}/corpus-kinds"
    options = storage_options(uri)
    pafs.copy_files(str(root), object_path(uri), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_filesystem(options))
    return root, uri, options


def test_s3_shards_equal_local_ones(corpus):
    root, uri, options = corpus
    for kind in ("mixed", "delta", "hf"):
        local = [s.fingerprinted() for s in list_shards(str(root / kind))]
        remote = [s.fingerprinted(options) for s in list_shards(f"{uri}/{kind}", storage_options=options)]
        assert [(s.id, s.format, s.fingerprint, s.size) for s in remote] == \
            [(s.id, s.format, s.fingerprint, s.size) for s in local], kind
        assert all(s.path.startswith(f"{uri}/{kind}/") for s in remote)
        for a, b in zip(local, remote):
            assert read_docs(b, id_column="id" if kind == "mixed" else "", storage_options=options) == \
                read_docs(a, id_column="id" if kind == "mixed" else ""), a.id
    assert [s.id for s in list_shards(f"{uri}/mixed", storage_options=options)] == \
        ["j.jsonl", "p.parquet", "sub/t.txt"]  # the hidden .tmp/ is skipped, as in a folder
    one = list_shards(f"{uri}/mixed/j.jsonl", storage_options=options)
    assert [(s.id, s.format) for s in one] == [("j.jsonl", "jsonl")]
    assert read_docs(one[0], storage_options=options)["error"] == ["", "line 2: not UTF-8 text", ""]


def test_bad_s3_inputs(corpus):
    _, uri, options = corpus
    with pytest.raises(NLAInputError, match=f"input {uri}/nope: no such object or prefix. Fix: point input="):
        list_shards(f"{uri}/nope", storage_options=options)
    with pytest.raises(NLAInputError, match="input s3://no-such-bucket-x/c: no such bucket 'no-such-bucket-x' at "
                                            "this endpoint. Fix: check the bucket name and AWS_ENDPOINT_URL."):
        list_shards("s3://no-such-bucket-x/c", storage_options=options)
    dead = {**options, "aws_endpoint_url": DEAD}
    with pytest.raises(NLAInputError, match=r"cannot list it \(endpoint unreachable\)\. Fix: check the bucket"):
        list_shards(f"{uri}/mixed", storage_options=dead)
    with pytest.raises(NLAInputError, match=r"gs:// is not\)\. Fix: copy the corpus"):
        list_shards("gs://bucket/corpus")
    shard = list_shards(f"{uri}/mixed", storage_options=options)[0]
    with pytest.raises(ShardError, match=r"shard j.jsonl: cannot read it from the store \(endpoint unreachable\)\. "
                                         "Fix: check that the store is reachable"):
        read_docs(shard, storage_options=dead)
