"""Every endpoint of the real `nla serve` on the toy kit (real Ray Serve, real Delta lake, real DuckDB), checked
against the library called in-process; bad requests get a 4xx with a message naming the input, never a 5xx."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

TEXT = "a heavy storm moved over oslo last night ."


def ok(server, path, body=None, **kw) -> dict:
    status, data = server.call(path, body, **kw)
    assert status == 200, (path, status, data)
    return data


def b64(v) -> str:
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


@pytest.fixture(scope="module")
def library(toy_kit):
    from nla.client import NLAClient, NLACritic

    return NLAClient(toy_kit / "av"), NLACritic(toy_kit / "ar")


def listening_on(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, read from the kernel's tables (Linux /proc/net)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(addr)
                # the kernel writes each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


def test_health_models_page_docs_and_token(server):
    port = int(server.url.rsplit(":", 1)[1])
    assert listening_on(port) == {"127.0.0.1"}  # bound to loopback only (no 0.0.0.0 / :: listener) by default
    assert server.call("/healthz", token=None) == (200, {"status": "ok"})
    m = ok(server, "/v1/models")
    assert m["d_model"] == 128 and m["layer"] == 1
    assert m["av"]["sidecar"]["role"] == "av" and m["ar"]["sidecar"]["role"] == "ar" and m["base"]
    assert {"activations", "explanations"} <= set(m["lake"]["tables"]) and m["limits"]["max_vectors"] == 64
    for token in (None, "wrong"):
        status, err = server.call("/v1/models", token=token)
        assert status == 401 and "NLA_API_TOKEN" in err["error"]
    import urllib.request

    page = urllib.request.urlopen(server.url + "/").read().decode()
    assert "NLA explorer" in page and "/static/app.js" in page
    files = re.findall(r'(?:src|href)="/static/([^"]+)"', page)  # every script and stylesheet the page names
    assert {"app.js", "uPlot.iife.min.js", "uPlot.min.css", "strip.js"} <= set(files)
    for name in files:
        assert len(urllib.request.urlopen(f"{server.url}/static/{name}").read()) > 100
    assert b"/v1/strip" in urllib.request.urlopen(server.url + "/static/strip.js").read()
    assert b"MIT" in urllib.request.urlopen(server.url + "/static/uPlot.LICENSE").read()  # the vendored licence
    paths = json.loads(urllib.request.urlopen(server.url + "/openapi.json").read())["paths"]
    assert {f"/v1/{e}" for e in ("extract", "explain", "reconstruct", "score", "compare", "search", "query",
                                  "models")} <= set(paths)


def test_extract_matches_the_library_also_when_batched(server, toy_kit):
    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig

    ext = Extractor.from_pretrained(toy_kit / "base", ExtractConfig(layer=1, min_position=0, all_positions=True))
    texts = [TEXT, "chen said the goal will win the coach . " * 6, "omar asked the bank about a loan ."]
    with ThreadPoolExecutor(len(texts)) as pool:  # different lengths in one padded batch
        served = list(pool.map(lambda t: ok(server, "/v1/extract", {"text": t, "positions": [1, 5, 8]}), texts))
    for text, got in zip(texts, served):
        rows = ext([text], ["x"])
        want = rows["vector"][[int(np.flatnonzero(rows["position"] == p)[0]) for p in (1, 5, 8)]]
        np.testing.assert_allclose([a["vector"] for a in got["activations"]], want, atol=1e-4)


def test_extract_tokens_positions_and_samples(server):
    got = ok(server, "/v1/extract", {"text": TEXT, "positions": []})
    toks = got["tokens"]
    assert toks[0]["special"] and "".join(t["token"] for t in toks[1:]) == TEXT and got["activations"] == []
    two = ok(server, "/v1/extract", {"text": TEXT, "positions": [2, 3]})
    assert [a["position"] for a in two["activations"]] == [2, 3] and len(two["activations"][0]["vector"]) == 128
    enc = ok(server, "/v1/extract", {"text": TEXT, "positions": [2, 3], "encoding": "base64"})
    decoded = np.frombuffer(base64.b64decode(enc["activations"][1]["vector"]), "<f4")
    np.testing.assert_allclose(decoded, two["activations"][1]["vector"], rtol=1e-6)
    s1 = ok(server, "/v1/extract", {"text": TEXT, "sample": 3, "min_position": 4, "seed": 1})
    s2 = ok(server, "/v1/extract", {"text": TEXT, "sample": 3, "min_position": 4, "seed": 1})
    pos = [a["position"] for a in s1["activations"]]
    assert pos == [a["position"] for a in s2["activations"]] and len(pos) == 3 and min(pos) >= 4


def test_explain_matches_the_library(server, library):
    client, critic = library
    by_text = ok(server, "/v1/explain", {"text": TEXT, "positions": [3, 8], "return_vectors": True})
    r = by_text["results"]
    assert [x["position"] for x in r] == [3, 8] and r[0]["token"] == " storm"
    vectors = np.array([x["vector"] for x in r], np.float32)
    gens = client.explain(vectors, temperature=0, max_new_tokens=200)
    assert [x["explanation"] for x in r] == [g.explanation for g in gens]
    mse, cos = critic.score_batch([g.explanation for g in gens], vectors)
    np.testing.assert_allclose([x["mse"] for x in r], mse.numpy(), atol=1e-4)
    np.testing.assert_allclose([x["cos"] for x in r], cos.numpy(), atol=1e-4)
    # the same vectors as float lists, base64 each, or one base64 string: the same explanations
    for vecs in (vectors.tolist(), [b64(v) for v in vectors], b64(vectors)):
        again = ok(server, "/v1/explain", {"vectors": vecs})["results"]
        assert [x["explanation"] for x in again] == [x["explanation"] for x in r] and again[1]["index"] == 1
    sampled = ok(server, "/v1/explain", {"vectors": [b64(vectors[0])], "samples": 3, "temperature": 1.0,
                                         "seed": 7, "max_new_tokens": 40})["results"]
    assert [x["sample"] for x in sampled] == [0, 1, 2] and all(x["index"] == 0 for x in sampled)
    assert all(x["status"] in ("ok", "no_tags", "truncated") for x in sampled)
    # each result carries the quality flags it gets from itself, as a lake row gets them at commit
    from nla.quality.flags import row_flags

    assert [x["flags"] for x in r] == [row_flags(g.explanation, g.raw_output, g.status) for g in gens]
    cut = ok(server, "/v1/explain", {"vectors": [b64(vectors[0])], "max_new_tokens": 3})["results"][0]
    assert cut["status"] == "truncated" and cut["flags"][-1] == "truncated", cut


def test_concurrent_requests_are_batched_without_mixing(server):
    ext = ok(server, "/v1/extract", {"text": TEXT, "positions": list(range(1, 10))})
    vectors = [a["vector"] for a in ext["activations"]]
    solo = [ok(server, "/v1/explain", {"vectors": [v], "max_new_tokens": 48})["results"][0]["explanation"]
            for v in vectors]
    with ThreadPoolExecutor(9) as pool:
        together = list(pool.map(lambda v: ok(server, "/v1/explain", {"vectors": [v], "max_new_tokens": 48}),
                                 vectors))
    assert [t["results"][0]["explanation"] for t in together] == solo


def test_reconstruct_score_compare(server, library):
    _, critic = library
    texts = ["The text is about weather.\n\nIt mentions oslo.\n\nIt ends with \"heavy storm\".",
             "The text is about music."]
    rec = ok(server, "/v1/reconstruct", {"explanations": texts})
    np.testing.assert_allclose(rec["vectors"], critic.reconstruct_batch(texts).numpy(), atol=1e-4)
    rec64 = ok(server, "/v1/reconstruct", {"explanations": texts, "encoding": "base64"})
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(rec64["vectors"][0]), "<f4"), rec["vectors"][0],
                               rtol=1e-6)
    ext = ok(server, "/v1/extract", {"text": TEXT, "positions": [3, 9]})
    vecs = [a["vector"] for a in ext["activations"]]
    sc = ok(server, "/v1/score", {"explanations": texts, "vectors": vecs})
    np.testing.assert_allclose(sc["mse"], [2 * (1 - c) for c in sc["cos"]], atol=1e-4)
    cmp = ok(server, "/v1/compare", {"a": {"text": TEXT, "position": 3}, "b": {"vector": b64(vecs[1])},
                                     "max_new_tokens": 64})
    assert {"a", "b", "difference", "cos_ab"} <= set(cmp) and cmp["a"]["explanation"] and cmp["difference"]["status"]
    assert cmp["cos_ab"] == pytest.approx(np.dot(vecs[0], vecs[1]) / np.linalg.norm(vecs[0]) / np.linalg.norm(vecs[1]),
                                          abs=1e-4)


def test_search_and_query(server):
    query = 'The text is about weather.\n\nIt mentions oslo.\n\nIt ends with "heavy storm".'  # the AV's own form
    by_text = ok(server, "/v1/search", {"text": query, "k": 5})["results"]
    assert len({r["act_id"] for r in by_text}) == 5 and all(r["explanation"] for r in by_text)
    assert sum("about weather" in r["explanation"] for r in by_text) >= 3
    sims = [r["similarity"] for r in by_text]
    assert sims == sorted(sims, reverse=True)
    vec = ok(server, "/v1/extract", {"text": TEXT, "positions": [3]})["activations"][0]["vector"]
    near = ok(server, "/v1/search", {"vector": b64(vec), "k": 3})
    exact = ok(server, "/v1/search", {"vector": b64(vec), "k": 3, "exact": True})
    assert len(near["results"]) >= 3 and exact["method"] == "exact" and near["method"] in ("exact", "index")
    assert [r["act_id"] for r in near["results"]] == [r["act_id"] for r in exact["results"]]
    kw = ok(server, "/v1/search", {"keyword": "weather|music", "k": 7})["results"]
    assert 0 < len(kw) <= 7 and all("weather" in r["explanation"] or "music" in r["explanation"] for r in kw)
    q = ok(server, "/v1/query", {"sql": "SELECT act_id, mse, explanation FROM labels ORDER BY mse DESC", "limit": 5})
    assert q["columns"] == ["act_id", "mse", "explanation"] and len(q["rows"]) == 5 and q["truncated"]
    # the fixture's labeling run (the explorer tests add runs under other recipes beside it)
    n = ok(server, "/v1/query", {"sql": "SELECT count(*) AS n FROM explanations WHERE run_id = 'label-serve-test'"}
           )["rows"][0]["n"]
    assert n == 192 and not ok(server, "/v1/query", {"sql": "SELECT 1 AS one"})["truncated"]


def test_new_table_versions_show_up(server):
    from nla.lake.mine import mine
    from nla.lake.store import Lake

    mine(Lake(server.lake), where="mse > 0.5", name="served_hard", limit=10)
    deadline = time.monotonic() + 15
    while "training_sets_served_hard" not in ok(server, "/v1/models")["lake"]["tables"]:
        assert time.monotonic() < deadline, "the lake deployment did not pick up the new table"
        time.sleep(0.5)
    assert ok(server, "/v1/query", {"sql": "SELECT count(*) n FROM training_sets_served_hard"})["rows"][0]["n"] <= 10


NAN_BODY = b'{"vectors": [[' + b", ".join([b"NaN"] + [b"1.0"] * 127) + b"]]}"
V = [0.5] * 128

BAD = [  # (path, body or raw bytes, status, words the message must hold)
    ("/v1/explain", {"vectors": [[1.0, 2.0]]}, 400, "d_model=128"),
    ("/v1/explain", NAN_BODY, 400, "NaN or inf"),
    ("/v1/explain", {"vectors": [[0.0] * 128]}, 400, "all zeros"),
    ("/v1/explain", {"vectors": ["not base64!"]}, 400, "base64"),
    ("/v1/explain", {"vectors": b64([1.0] * 100)}, 400, "multiple of d_model=128"),
    ("/v1/explain", {"vectors": [V], "text": TEXT, "positions": [1]}, 422, "exactly one of vectors or text"),
    ("/v1/explain", {"text": TEXT}, 422, "text needs positions"),
    ("/v1/explain", {"vectors": [V], "temprature": 1}, 422, "temprature"),
    ("/v1/explain", {"vectors": [V], "max_new_tokens": 100_000}, 413, "max_new_tokens"),
    ("/v1/explain", {"vectors": [V] * 65}, 413, "limit of 64"),
    ("/v1/explain", {"vectors": [V], "samples": 9}, 413, "samples"),
    ("/v1/explain", {"text": TEXT, "positions": [999]}, 400, "positions [999]"),
    ("/v1/explain", {"text": TEXT, "positions": [0]}, 400, "special tokens"),
    ("/v1/explain", {"text": "   ", "positions": [1]}, 400, "text is empty"),
    ("/v1/explain", b'{"text": "bad \\ud800 surrogate", "positions": [1]}', 400, "UTF-8"),
    ("/v1/explain", b'{"vectors": [[1.0, 2.0]', 422, "not valid JSON"),
    ("/v1/extract", {"text": TEXT, "positions": [1], "sample": 2}, 422, "positions or sample"),
    ("/v1/extract", {"text": "x" * 20_001, "positions": []}, 413, "length in characters"),
    ("/v1/reconstruct", {"explanations": ["ok", ""]}, 400, "explanations[1] is empty"),
    ("/v1/reconstruct", {"explanations": []}, 422, "explanations"),
    ("/v1/score", {"explanations": ["a", "b"], "vectors": [V]}, 400, "pair them 1:1"),
    ("/v1/compare", {"a": {"vector": V}, "b": {"vector": V}}, 400, "same vector"),
    ("/v1/compare", {"a": {"text": TEXT}, "b": {"vector": V}}, 422, "text and position"),
    ("/v1/search", {"k": 3}, 422, "exactly one of text, vector or keyword"),
    ("/v1/search", {"keyword": "(", "k": 3}, 400, "not a valid regex"),
    ("/v1/search", {"keyword": "rain", "k": 1000}, 413, "k: 1000"),
    ("/v1/query", {"sql": ""}, 400, "empty query"),
    ("/v1/query", {"sql": "SELECT 1", "limit": 5000}, 413, "limit"),
    ("/v1/query", {"sql": "DROP TABLE explanations"}, 400, "read-only"),
    ("/v1/query", {"sql": "DELETE FROM explanations"}, 400, "read-only"),
    ("/v1/query", {"sql": "COPY explanations TO '/tmp/x.csv'"}, 400, "read-only"),
    ("/v1/query", {"sql": "ATTACH '/tmp/x.db' AS x"}, 400, "read-only"),
    ("/v1/query", {"sql": "INSTALL httpfs"}, 400, "read-only"),
    ("/v1/query", {"sql": "LOAD httpfs"}, 400, "read-only"),
    ("/v1/query", {"sql": "SET enable_external_access = true"}, 400, "read-only"),
    ("/v1/query", {"sql": "PRAGMA database_list"}, 400, "read-only"),
    ("/v1/query", {"sql": "SELECT 1; SELECT 2"}, 400, "2 statements"),
    ("/v1/query", {"sql": "SELECT * FROM read_csv('/etc/passwd')"}, 400, "cannot read or write files"),
    ("/v1/query", {"sql": "SELECT * FROM read_text('/etc/hostname')"}, 400, "cannot read or write files"),
    ("/v1/query", {"sql": "SELECT * FROM nope"}, 400, "Tables here"),
    ("/v1/query", {"sql": "SELECT repeat('x', 1000000) FROM range(100)"}, 400, "over 16,777,216 bytes"),
    ("/v1/explain", {"vectors": [V], "temperature": 1.0, "seed": 2**70}, 422, "seed"),
    ("/v1/explain", {"vectors": [V], "temperature": 1e-300}, 422, "temperature must be 0"),
    ("/v1/explain", {"vectors": [[1e20] * 128]}, 400, "norm too large"),
    ("/v1/explain", b'{"text": "caf\xe9 latin-1", "positions": [1]}', 400, "body: not UTF-8 (byte 13)"),
    ("/v1/compare", {"a": {"vector": [1e20] * 128}, "b": {"vector": V}}, 400, "norm too large"),
]


@pytest.mark.parametrize("path,body,status,words", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_clear_4xx(server, path, body, status, words):
    got, err = server.call(path, raw=body) if isinstance(body, bytes) else server.call(path, body)
    assert got == status and words in err["error"], (got, err)
    assert "Fix" in err["error"] or status == 422 or "refused" in err["error"], err


def test_transport_errors_are_4xx(server):
    big = json.dumps({"vectors": [[0.1] * 128] * 8000}).encode()  # ~5 MB > max_body_bytes
    status, err = server.call("/v1/explain", raw=big)
    assert status == 413 and "limit of 4194304" in err["error"]
    status, err = server.call("/v1/explain", raw=b'{"vectors": []}', headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in err["error"]
    assert server.call("/v1/nope", {"x": 1})[0] == 404
    assert server.call("/v1/explain", method="GET")[0] == 405
    status, err = server.call("/v1/query", {"sql": "SELECT sum(a.range * b.range) FROM range(200000) a, "
                                                   "range(200000) b"})
    assert status == 400 and "cut off after 2s" in err["error"]


def test_cli_refuses_bad_config_before_starting(server, tmp_path):
    taken = int(server.url.rsplit(":", 1)[1])  # the running server's port
    narrow = tmp_path / "narrow-base"  # a base 32 wide beside the toy AV's 128: refused from its config.json alone
    narrow.mkdir()
    (narrow / "config.json").write_text('{"model_type": "llama", "hidden_size": 32}')
    for args, words in ((["modles.av=x"], "unknown key 'modles'"), (["limits.max_vectors=0"], "must be positive"),
                        (["--port", "70000"], "not a TCP port"), (["models.av=/nowhere/av"], "/nowhere/av"),
                        ([f"models.base={narrow}"], f"models.base {narrow} has d=32 but the AV reads d=128"),
                        (["--port", str(taken)], f"cannot listen on 127.0.0.1:{taken}")):
        p = subprocess.run([sys.executable, "-m", "nla.cli.main", "serve", *args], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


def test_seeded_sampling_is_reproducible_beside_other_requests(server):
    """The same seeded request, sent three times at once beside unseeded ones, gets the same samples each time (a
    seeded request is never batched with others); another seed samples otherwise."""
    vec = ok(server, "/v1/extract", {"text": TEXT, "positions": [3]})["activations"][0]["vector"]
    seeded = {"vectors": [vec], "samples": 4, "temperature": 1.0, "seed": 7, "max_new_tokens": 48}
    bodies = [seeded, {**seeded, "seed": None}, seeded, {**seeded, "seed": None}, seeded, {**seeded, "seed": 8}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        got = [[(x["explanation"], x["raw_output"]) for x in r["results"]]
               for r in pool.map(lambda b: ok(server, "/v1/explain", b), bodies)]
    assert got[0] == got[2] == got[4] and len(got[0]) == 4
    assert got[5] != got[0]
