"""`nla import` on real files (numpy, safetensors, Parquet, Delta) into a real Delta lake, d checked against the toy
kit's AV: what lands in the lake, reruns, and every bad file refused with one line that leaves the lake as it was."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake
from safetensors.numpy import save_file

from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.inprocess import nla

D = 128  # the toy kit's d_model


@pytest.fixture(scope="module")
def decoder():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((300, D)).astype(np.float32)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def rows(lake, sql: str) -> list[dict]:
    with LakeQuery(Lake(lake)) as q:
        return q.run(sql, limit=None).to_pylist()


def test_formats_sources_labels_and_reruns(tmp_path, capsys, decoder, toy_kit):
    lake = str(tmp_path / "lake")
    save_file({"W_dec": decoder, "W_enc": np.ascontiguousarray(decoder.T), "b_dec": np.zeros(D, np.float32)},
              str(tmp_path / "res.safetensors"))
    rc, out, err = nla(capsys, "import", str(tmp_path / "res.safetensors"), "--tensor", "W_dec", "--rows", "100:300",
                       "--source", "sae:res-l1", "--lake", lake)
    assert rc == 0, err
    assert re.search(r"^imported 200 vectors \(d=128\) from res\.safetensors:W_dec rows 100:300 as source sae:res-l1: "
                     r"1 units, recipe \w{16}, run import-", out), out
    # the same import again: nothing to do, said so; the lake keeps one copy
    rc, out, err = nla(capsys, "import", str(tmp_path / "res.safetensors"), "--tensor", "W_dec", "--rows", "100:300",
                       "--source", "sae:res-l1", "--lake", lake)
    assert rc == 0 and "are in the lake already as source sae:res-l1" in out and "nothing to import" in out, out
    # the rest of the latents, from the encoder stored (d, latents): --transpose reads its columns
    rc, out, err = nla(capsys, "import", str(tmp_path / "res.safetensors"), "--tensor", "W_enc", "--transpose",
                       "--rows", ":100", "--source", "sae:res-l1", "--lake", lake)
    assert rc == 0, err
    got = rows(lake, "SELECT position, vector, norm, doc_id, token_id, layer FROM activations WHERE source = "
                     "'sae:res-l1' ORDER BY position")
    assert [r["position"] for r in got] == list(range(300))
    assert np.array_equal(np.array([r["vector"] for r in got], np.float32), decoder)
    assert {(r["doc_id"], r["token_id"], r["layer"]) for r in got} == {("sae:res-l1", None, 1)}
    assert np.allclose([r["norm"] for r in got], 1.0, atol=1e-5)
    # a steering vector (.npy, one vector), and probe directions with names and metadata (Parquet, then Delta)
    np.save(tmp_path / "steer.npy", 3 * decoder[0])
    assert nla(capsys, "import", str(tmp_path / "steer.npy"), "--lake", lake)[0] == 0
    probes = pa.table({"vector": pa.array(list(decoder[:5]), pa.list_(pa.float32())), "name": [f"p{i}" for i in range(5)],
                       "auc": [0.9, 0.8, 0.7, 0.6, 0.5]})
    pq.write_table(probes, tmp_path / "probes.parquet")
    write_deltalake(str(tmp_path / "probes-delta"), probes)
    for path in ("probes.parquet", "probes-delta"):
        rc, out, err = nla(capsys, "import", str(tmp_path / path), "--label-column", "name", "--meta-columns", "auc",
                           "--lake", lake)
        assert rc == 0, err
    got = rows(lake, "SELECT source, count(*) n, min(label) l, max(meta) m, max(norm) x FROM activations GROUP BY 1 "
                     "ORDER BY 1")
    assert [(r["source"], r["n"]) for r in got] == [("file:probes", 5), ("file:probes-delta", 5), ("file:steer", 1),
                                                    ("sae:res-l1", 300)]
    assert got[0]["l"] == "p0" and json.loads(got[0]["m"]) == {"auc": 0.9} and abs(got[2]["x"] - 3) < 1e-5
    # every unit is in the ledger under its import recipe, so `nla label --from-activations` finds it
    ledger = Lake(lake).ledger("activations")
    assert len(ledger) == 5 and all(r["name"].split("#")[0] in {"sae:res-l1", "file:steer", "file:probes",
                                                                 "file:probes-delta"} for r in ledger)
    assert rows(lake, "SELECT job, status FROM runs ORDER BY started_at") == [{"job": "import", "status": "ok"}] * 5


def _versions(lake) -> dict:
    lk = Lake(lake)
    return {n: lk.table(n).version() for n in lk.names()}


BAD = {
    "wrong_d": (lambda p, w: np.save(p / "x.npy", w[:, :64]), ["x.npy"],
                r"x\.npy: vectors of d=64, but the AV .* explains d=128 .* Fix: import vectors of that width"),
    "transposed": (lambda p, w: np.save(p / "x.npy", np.ascontiguousarray(w[:128].T[:, :100])), ["x.npy"],
                   r"d=100, .* Its other axis has that width: pass --transpose"),
    "nan": (lambda p, w: np.save(p / "x.npy", np.where(np.arange(300)[:, None] == 217, np.nan, w)), ["x.npy"],
            r"x\.npy: row 217 has NaN or inf values .* Nothing was imported\. Fix: drop or repair those rows"),
    "zero_rows": (lambda p, w: np.save(p / "x.npy", w[:0]), ["x.npy"], r"x\.npy: no rows, nothing to import"),
    "zero_vector": (lambda p, w: np.save(p / "x.npy", np.where(np.arange(300)[:, None] == 3, 0, w)), ["x.npy"],
                    r"row 3 is all zeros: the AV explains a direction"),
    "unknown_tensor": (lambda p, w: save_file({"W_dec": w}, str(p / "x.safetensors")),
                       ["x.safetensors", "--tensor", "decoder"],
                       r"x\.safetensors: no tensor 'decoder'; the file has W_dec\. Fix: pass --tensor"),
    "range": (lambda p, w: np.save(p / "x.npy", w), ["x.npy", "--rows", "250:400"],
              r"--rows 250:400: x\.npy has 300 rows, .* Fix: pick a range inside 0:300"),
    "no_column": (lambda p, w: pq.write_table(pa.table({"v": pa.array(list(w), pa.list_(pa.float32()))}),
                                              p / "x.parquet"), ["x.parquet"],
                  r"x\.parquet: no column 'vector' \(columns: v\)\. Fix: name the vector column with --vector-column"),
    "ragged": (lambda p, w: pq.write_table(pa.table({"vector": pa.array([list(w[0]), list(w[1][:100])],
                                                                        pa.list_(pa.float32()))}), p / "x.parquet"),
               ["x.parquet"], r"row 1 has 100 values, the first row 128"),
    "format": (lambda p, w: (p / "x.csv").write_text("1,2\n"), ["x.csv"], r"not a vector file nla reads"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_one_error_and_the_lake_unchanged(case, tmp_path, capsys, decoder, toy_kit):
    lake = tmp_path / "lake"
    assert nla(capsys, "import", _npy(tmp_path, decoder), "--source", "sae:kept", "--lake", str(lake))[0] == 0
    before = (_versions(lake), rows(lake, "SELECT count(*) n FROM activations"), sorted(p.name for p in lake.iterdir()))
    make, args, match = BAD[case]
    make(tmp_path, decoder)
    rc, out, err = nla(capsys, "import", str(tmp_path / args[0]), *args[1:], "--lake", str(lake))
    assert rc == 2 and len(err.strip().splitlines()) == 1, (rc, out, err)
    assert re.search(match, err), err
    assert (_versions(lake), rows(lake, "SELECT count(*) n FROM activations"),
            sorted(p.name for p in lake.iterdir())) == before


def test_other_content_at_the_same_indices_is_refused(tmp_path, capsys, decoder, toy_kit):
    lake = str(tmp_path / "lake")
    assert nla(capsys, "import", _npy(tmp_path, decoder), "--source", "sae:a", "--lake", lake)[0] == 0
    np.save(tmp_path / "v2.npy", decoder[::-1].copy())  # a new version of the SAE under the same name
    before = _versions(lake)
    rc, out, err = nla(capsys, "import", str(tmp_path / "v2.npy"), "--source", "sae:a", "--rows", "0:10", "--lake",
                       lake)
    assert rc == 2 and "source sae:a already has rows 0:300" in err and "Fix: import the new file under another " \
        "--source name" in err, err
    assert _versions(lake) == before
    # the fix the message gives: another source name
    assert nla(capsys, "import", str(tmp_path / "v2.npy"), "--source", "sae:b", "--lake", lake)[0] == 0


def _npy(tmp_path, w) -> str:
    np.save(tmp_path / "ok.npy", w)
    return str(tmp_path / "ok.npy")
