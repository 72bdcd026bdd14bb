"""The lake never skips work it has not done: shards known by content, rows by recipe, relabels side by side, and
no empty success. Real Ray (the package's shared cluster), real Delta, the real CLI on the toy kit."""

from __future__ import annotations

import json
import re
import shutil

import yaml

from nla.labeling.identity import name_of
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.jobs.test_label import job


def docs(root, name: str, seed: int, n: int = 10):
    from nla.toy.corpus import generate_corpus

    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", encoding="utf-8") as f:
        for d in generate_corpus(n, seed):
            f.write(json.dumps({"id": d.doc_id, "text": d.text, "topic": d.topic}) + "\n")
    return root


def rows(lake, sql: str) -> list[dict]:
    with LakeQuery(Lake(lake)) as q:
        return q.run(sql, limit=None).to_pylist()


def test_same_name_elsewhere_is_another_shard_and_changed_content_is_refused(tmp_path):
    lake = tmp_path / "lake"
    one, two = docs(tmp_path / "one", "fortunes-00.jsonl", 1), docs(tmp_path / "two", "fortunes-00.jsonl", 2, 6)
    p = job("label", f"input={one}", "--lake", str(lake))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    before = rows(lake, "SELECT count(*) n FROM activations")[0]["n"]
    p = job("label", f"input={two}", "--lake", str(lake))  # the same file name, other documents: labeled
    assert p.returncode == 0 and "0 already committed under this recipe, 1 to do" in p.stdout, p.stdout[-3000:]
    ledger = rows(lake, "SELECT name, shard, fingerprint, path FROM shards WHERE table_name = 'activations'")
    assert len(ledger) == 2 and {r["name"] for r in ledger} == {"fortunes-00.jsonl"}
    assert len({r["fingerprint"] for r in ledger}) == 2 and len({r["shard"] for r in ledger}) == 2
    assert rows(lake, "SELECT count(*) n FROM activations")[0]["n"] > before
    # the first file's content changes: refused by default, naming the file and both fingerprints
    old = next(r["fingerprint"] for r in ledger if r["path"] == str((one / "fortunes-00.jsonl").resolve()))
    docs(tmp_path / "one", "fortunes-00.jsonl", 3)
    snapshot = rows(lake, "SELECT count(*) n FROM explanations")
    p = job("label", f"input={one}", "--lake", str(lake))
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: input shard fortunes-00.jsonl (") and f"fingerprint was {old[:12]}" in err, err
    assert "on_changed=relabel" in err and "on_changed=skip" in err
    assert rows(lake, "SELECT count(*) n FROM explanations") == snapshot  # nothing written
    p = job("label", f"input={one}", "--lake", str(lake), "on_changed=relabel")
    assert p.returncode == 0 and "[commit] shard fortunes-00.jsonl@" in p.stdout, p.stdout[-3000:]
    assert len(rows(lake, "SELECT DISTINCT shard FROM activations")) == 3  # both contents of the file, and two's


def test_shard_with_no_good_document_is_not_done(tmp_path):
    lake, corpus = tmp_path / "lake", docs(tmp_path / "c", "fortunes-00.jsonl", 4)
    (corpus / "empty.jsonl").write_bytes(b"")
    p = job("label", f"input={corpus}", "--lake", str(lake), "text_column=body")  # a typo: every document bad
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert re.search(r"\[empty\] shard fortunes-00\.jsonl@\w+: no activations, not marked done \(all 10 documents "
                     r"are bad; the first: line 1: no string 'body' key \(keys seen: id, text, topic\)\)", p.stdout)
    assert re.search(r"\[empty\] shard empty\.jsonl@\w+: .*\(the file holds no documents\)", p.stdout)
    assert p.stderr.strip().splitlines()[-1] == ("error: nothing was labeled: every shard was empty or unreadable (see "
                                                 "the lines above). Fix the cause and rerun the same command: nothing "
                                                 "was marked done.")
    assert Lake(lake).ledger() == []  # nothing ledgered (not even a ledger table)
    assert rows(lake, "SELECT status FROM runs") == [{"status": "empty"}]
    p = job("label", f"input={corpus}", "--lake", str(lake))  # the fix: the shard is labeled now
    assert p.returncode == 0 and "0 already committed under this recipe, 2 to do" in p.stdout, p.stdout[-3000:]
    assert {name_of(u) for u in Lake(lake).committed_shards("explanations")} == {"fortunes-00.jsonl"}


def test_relabel_with_another_av_and_sampling_keeps_the_old_rows_and_compares(tmp_path, toy_kit):
    lake, corpus = tmp_path / "lake", docs(tmp_path / "c", "part-0000.jsonl", 5, 12)
    p = job("label", f"input={corpus}", "--lake", str(lake))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    first = rows(lake, "SELECT * EXCLUDE (created_at) FROM explanations ORDER BY act_id")
    (r1,) = {r["recipe"] for r in first}
    # another AV (a copy whose sidecar differs: another checkpoint by content), in the README's words
    av2 = tmp_path / "av2"
    shutil.copytree(toy_kit / "av", av2)
    meta = yaml.safe_load((av2 / "nla_meta.yaml").read_text(encoding="utf-8"))
    meta["created_by"] = "a second AV"
    (av2 / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    p = job("label", f"input={corpus}", "--lake", str(lake), f"models.av={av2}")
    assert p.returncode == 0 and "0 already committed under this recipe, 1 to do" in p.stdout, p.stdout[-3000:]
    p = job("label", "--from-activations", "--lake", str(lake), "sampling.samples=2", "sampling.temperature=1.0")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    per = rows(lake, "SELECT recipe, av, count(*) n, count(DISTINCT act_id) a FROM explanations GROUP BY ALL")
    n = len(first)
    assert sorted((r["n"], r["a"]) for r in per) == [(n, n), (n, n), (2 * n, n)]
    assert {r["av"] for r in per} == {first[0]["av"], f"{tmp_path.name}/av2"}
    assert rows(lake, f"SELECT * EXCLUDE (created_at) FROM explanations WHERE recipe = '{r1}' ORDER BY act_id") \
        == first  # the first rows are intact
    assert rows(lake, "SELECT count(*) n FROM activations")[0]["n"] == n  # extracted once: the same recipe
    r3 = next(r["recipe"] for r in per if r["n"] == 2 * n)
    runs = rows(lake, "SELECT run_id, recipes FROM runs ORDER BY started_at")
    assert json.loads(runs[-1]["recipes"])["explanations"]["hash"] == r3
    assert json.loads(runs[-1]["recipes"])["explanations"]["fields"]["sampling"]["samples"] == 2
    p = job("compare", r1[:6], runs[-1]["run_id"], "--lake", str(lake), "--format", "json")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    c = json.loads(p.stdout)
    paired = rows(lake, f"SELECT avg(mse_b - mse_a) d, count(*) n FROM compare('{r1}', '{r3}')")[0]
    assert (c["recipe_a"], c["recipe_b"], c["n"]) == (r1, r3, n) and abs(c["diff"] - paired["d"]) < 1e-9
    assert c["b_better"] + c["a_better"] <= n and len(c["changed"]) == min(10, n) and c["ci95"] > 0
    p = job("compare", r1, r1, "--lake", str(lake))
    assert p.returncode == 2 and "are the same recipe" in p.stderr
