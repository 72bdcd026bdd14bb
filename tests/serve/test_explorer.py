"""The explorer's endpoints over HTTP against the real server: a from-activations run watched through
/v1/lake/progress while it commits, then the overview, a page of labels (and its SQL through /v1/query), a document,
a comparison of the two recipes and the token strip, each checked against the library called in-process; and their
bad inputs."""

from __future__ import annotations

import time

from nla.lake import browse, overview
from nla.lake.compare import compare
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.serve.conftest import Relabel
from tests.serve.test_page import TEXT


def ok(server, path, body=None):
    status, data = server.call(path, body)
    assert status == 200, (path, status, data)
    return data


def wait_progress(server, run_id: str, committed: int) -> dict:
    """The run's progress once the server shows `committed` shards (it picks new versions up within 1 s)."""
    deadline = time.monotonic() + 20
    while True:
        got = [p for p in ok(server, "/v1/lake/progress")["progress"] if p["run_id"] == run_id]
        if got and got[0]["shards_committed"] == committed:
            return got[0]
        assert time.monotonic() < deadline, got
        time.sleep(0.3)


def test_explorer_endpoints_match_the_library(server, toy_kit):
    run = Relabel(toy_kit, server.lake, temperature=1.0, seed=7, rows=6)
    run.start()
    p = wait_progress(server, run.run_id, 0)
    assert (p["shards_total"], p["rows_committed"], p["eta_s"]) == (2, 0, None)
    run.commit()
    p = wait_progress(server, run.run_id, 1)
    assert p["rows_committed"] == 6 and p["shards_per_s"] > 0 and p["eta_s"] > 0
    assert p["errors"] == {k: 0 for k in overview.ERROR_COUNTS}
    run.finish()
    deadline = time.monotonic() + 20
    while (got := ok(server, "/v1/lake/progress"))["progress"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    mine = next(r for r in got["runs"] if r["run_id"] == run.run_id)
    assert mine["status"] == "ok" and mine["counts"]["shards_committed"] == 2 and mine["recipe"] == run.recipe

    with LakeQuery(Lake(server.lake)) as q:
        o = ok(server, "/v1/lake/overview")
        want = overview.summary(q)
        assert o["tables"] == want["tables"] and o["histogram"] == want["histogram"]
        assert [f["feature"] for f in o["features"]] == [f["feature"] for f in want["features"]]
        recipes = {r["recipe"]: r for r in o["recipes"]}
        assert recipes[run.recipe]["rows"] == 12 and recipes[run.recipe]["fields"]["sampling"]["temperature"] == 1.0
        base = next(r for r in o["recipes"] if r["fields"]["sampling"]["temperature"] == 0.0)
        assert sum(o["histogram"]["recipes"][base["recipe"]]) == base["scored"] == 192
        assert {p["run_id"] for p in o["fve"]} >= {"label-serve-test", run.run_id}
        assert o["columns"] == {"flags": True, "source": True} and o["progress"] == []
        assert ok(server, "/v1/lake/recipes")["recipes"] == o["recipes"]

        f = browse.LabelFilter(mse_min=0.2, keyword="weather", sort="cos", descending=False, page=1, page_size=5)
        page = ok(server, "/v1/lake/labels", {"mse_min": 0.2, "keyword": "weather", "sort": "cos",
                                              "descending": False, "page": 1, "page_size": 5})
        local = browse.label_page(q, f)
        assert page["total"] == local["total"] > 10 and page["sql"] == local["sql"]
        assert [r["act_id"] for r in page["rows"]] == [r["act_id"] for r in local["rows"]]
        again = ok(server, "/v1/query", {"sql": page["sql"], "limit": 5})  # "open as SQL" runs as shown
        assert [r["act_id"] for r in again["rows"]] == [r["act_id"] for r in page["rows"]]

        doc = ok(server, "/v1/lake/document", {"act_id": page["rows"][0]["act_id"]})
        assert doc["selected"] == page["rows"][0]["position"] and doc["doc_id"] == page["rows"][0]["doc_id"]
        assert [p["position"] for p in doc["positions"]] == [p["position"] for p in
                                                               browse.document(q, doc["act_id"])["positions"]]

        c = ok(server, "/v1/lake/compare", {"a": base["recipe"][:6], "b": run.run_id, "top": 5})
        local_c = compare(q, base["recipe"], run.recipe, top=5)
        assert (c["recipe_a"], c["recipe_b"], c["n"]) == (base["recipe"], run.recipe, 12)
        assert abs(c["diff"] - local_c.diff) < 1e-6 and sum(c["histogram"]["counts"]) == 12
        assert [r["act_id"] for r in c["changed"]] == [r["act_id"] for r in local_c.changed]
        assert c["b"]["fields"]["sampling"]["seed"] == 7

    strip = ok(server, "/v1/strip", {"text": TEXT})
    readable = [t["position"] for t in strip["tokens"] if not t["special"]]
    assert [r["position"] for r in strip["results"]] == readable and strip["not_explained"] == 0
    one = ok(server, "/v1/explain", {"text": TEXT, "positions": readable[2:4]})["results"]
    for r, s in zip(one, strip["results"][2:4]):  # the batch gives what one position at a time gives
        assert (r["explanation"], r["status"]) == (s["explanation"], s["status"]) and abs(r["mse"] - s["mse"]) < 1e-4
    long = ok(server, "/v1/strip", {"text": " ".join(["rain"] * 80), "max_new_tokens": 1})
    assert len(long["results"]) == 64 and long["not_explained"] == 16
    assert "the first 64 of 80 readable tokens are explained" in long["note"] and "limits.max_vectors" in long["note"]


BAD = [
    ("/v1/lake/labels", {"mse_min": 0.5, "colour": "red"}, 422, "colour: Unexpected keyword argument"),
    ("/v1/lake/labels", {"sort": "explanation"}, 422, "sort: Input should be 'mse', 'cos', 'n_tokens' or 'created_at'"),
    ("/v1/lake/labels", {"mse_min": 3, "mse_max": 1}, 400, "mse_min 3.0 is above mse_max 1.0"),
    ("/v1/lake/labels", {"flag": "degenrate"}, 400, "flag: 'degenrate' is not a quality flag. Fix:"),
    ("/v1/lake/labels", {"keyword": "a(("}, 400, "is not a valid regex"),
    ("/v1/lake/labels", {"page_size": 1000}, 400, "page_size: 1000 is outside 1..200"),
    ("/v1/lake/document", {"act_id": "0123456789abcdef01234567"}, 400, "is not in this lake's activations"),
    ("/v1/lake/document", {}, 422, "act_id: Field required"),
    ("/v1/lake/compare", {"a": "label-serve-test", "b": "label-serve-test"}, 400, "are the same recipe"),
    ("/v1/lake/compare", {"a": "nope", "b": "label-serve-test"}, 400, "'nope' is neither a recipe"),
    ("/v1/lake/compare", {"a": "x", "b": "y", "top": 0}, 422, "top: Input should be greater than or equal to 1"),
    ("/v1/strip", {"text": "   "}, 400, "text is empty. Fix:"),
    ("/v1/strip", {"text": "rain", "max_new_tokens": 100000}, 413, "max_new_tokens: 100000 is over"),
    ("/v1/strip", {"text": "rain", "temperature": 0.001}, 422, "temperature must be 0 (greedy) or at least"),
]


def test_explorer_bad_inputs_name_the_field_and_the_fix(server):
    before = {n: Lake(server.lake).table(n).version() for n in Lake(server.lake).names()}
    for path, body, status, match in BAD:
        got, err = server.call(path, body)
        assert (got, match in err.get("error", "")) == (status, True), (path, body, got, err)
        assert "Fix:" in err["error"], err
    assert {n: Lake(server.lake).table(n).version() for n in Lake(server.lake).names()} == before


def test_nla_serve_shows_the_demo_lake_when_there_is_no_other(tmp_path, monkeypatch):
    from nla.serve.app import resolve_lake

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NLA_LAKE", raising=False)
    assert resolve_lake("") == str(tmp_path / "lake")  # nothing here: ./lake (the page says it is empty)
    (tmp_path / "nla-demo" / "lake" / "explanations").mkdir(parents=True)
    assert resolve_lake("") == str(tmp_path / "nla-demo" / "lake")  # `nla demo` then `nla serve`
    assert resolve_lake("other") == str(tmp_path / "other")  # a named lake is that lake
    monkeypatch.setenv("NLA_LAKE", str(tmp_path / "env-lake"))
    assert resolve_lake("") == str(tmp_path / "env-lake")
    monkeypatch.delenv("NLA_LAKE")
    (tmp_path / "lake").mkdir()
    assert resolve_lake("") == str(tmp_path / "lake")  # ./lake, when it exists, wins
