"""Corpus shards of every input kind; bad documents become error rows, unreadable shards raise ShardError."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nla.errors import NLAInputError
from nla.labeling.corpus import ShardError, list_shards, read_shard


def read_docs(shard, **kw):
    out = {"doc_id": [], "text": [], "error": []}
    for b in read_shard(shard, **kw):
        for k in out:
            out[k] += b[k]
    return out


def test_folder_of_mixed_shards(tmp_path):
    pq.write_table(pa.table({"text": ["alpha beta", "gamma"], "id": ["a", "b"]}), tmp_path / "p.parquet")
    (tmp_path / "j.jsonl").write_bytes(b'{"text": "one", "id": 1}\n\n{"text": "two"}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.txt").write_text("a whole file is one document")
    shards = list_shards(str(tmp_path))
    assert [(s.id, s.format) for s in shards] == [("j.jsonl", "jsonl"), ("p.parquet", "parquet"),
                                                  ("sub/t.txt", "txt")]
    j = read_docs(shards[0], id_column="id")
    assert j["text"] == ["one", "two"] and j["doc_id"][0] == "1" and len(j["doc_id"][1]) == 16  # content hash
    assert read_docs(shards[1], id_column="id")["doc_id"] == ["a", "b"]
    assert read_docs(shards[2])["text"] == ["a whole file is one document"]


def test_bad_documents_become_error_rows(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "\xff\xfe"}\n\xff\xfe\nnot json\n'
                                         b'{"body": "no text key"}\n{"text": "   "}\n')
    rows = read_docs(list_shards(str(tmp_path))[0])
    assert rows["text"][0] == "fine" and rows["error"][0] == ""
    errors = rows["error"][1:]
    assert errors[:2] == ["line 2: not UTF-8 text", "line 3: not UTF-8 text"] and "not JSON" in errors[2]
    assert "no string 'text' key" in errors[3] and errors[4] == "empty document"
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    assert "not UTF-8" in read_docs(list_shards(str(tmp_path / "bin.txt"))[0])["error"][0]


def test_unreadable_shards(tmp_path):
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ShardError, match="unreadable"):
        read_docs(list_shards(str(tmp_path / "corrupt.parquet"))[0])
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    with pytest.raises(ShardError, match="no column 'text'"):
        read_docs(list_shards(str(tmp_path / "nocol.parquet"))[0])


def test_delta_and_hf_inputs(tmp_path):
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "delta"), pa.table({"text": ["d1", "d2"]}))
    shards = list_shards(str(tmp_path / "delta"))
    assert len(shards) == 1 and read_docs(shards[0])["text"] == ["d1", "d2"]
    from datasets import Dataset

    hf = tmp_path / "hf"  # written as users write it: the README's save_to_disk, in three files
    Dataset.from_dict({"id": ["h1", "h2", "h3", "h4", "h5"], "text": ["one", "two", "three", "four", "five"],
                       "other": [1, 2, 3, 4, 5]}).save_to_disk(str(hf), num_shards=3)
    shards = list_shards(str(hf))
    assert [(s.id, s.format) for s in shards] == [(f"data-0000{i}-of-00003.arrow", "hf") for i in range(3)]
    docs = [read_docs(s, id_column="id") for s in shards]
    assert [d["doc_id"] for d in docs] == [["h1", "h2"], ["h3", "h4"], ["h5"]]
    assert [t for d in docs for t in d["text"]] == ["one", "two", "three", "four", "five"]


def test_bad_inputs(tmp_path):
    with pytest.raises(NLAInputError, match="input is empty"):
        list_shards("")
    with pytest.raises(NLAInputError, match="no such file"):
        list_shards(str(tmp_path / "missing"))
    with pytest.raises(NLAInputError, match="no \\*.parquet"):
        list_shards(str(tmp_path))


def test_input_under_a_hidden_folder(tmp_path):
    """Hidden parts inside the input are skipped; a hidden folder above it (~/.cache/corpus) is not."""
    root = tmp_path / ".cache" / "corpus"
    (root / ".tmp").mkdir(parents=True)
    (root / "a.jsonl").write_text('{"text": "a heavy storm moved over oslo ."}\n')
    (root / ".tmp" / "b.jsonl").write_text('{"text": "half written"}\n')
    assert [s.id for s in list_shards(str(root))] == ["a.jsonl"]
