"""Browsing labels without SQL (nla/lake/browse.py) on a lake of known content: filters, sort, pages, the SQL shown,
a document's positions, and every bad filter refused with its fix."""

from __future__ import annotations

import numpy as np
import pytest

from nla.errors import NLAInputError
from nla.lake.browse import STATUSES as BROWSE_STATUSES
from nla.lake.browse import LabelFilter, document, label_page
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from tests.nla.lake.conftest import TOPICS, shard_rows, versions


def known_rows() -> list[dict]:
    """Every explanation of the `lake` fixture with its activation, built from the same generator."""
    out = []
    for s in range(3):
        acts, expl = shard_rows(s)
        for a, e in zip(acts.to_pylist(), expl.to_pylist()):
            out.append({**e, "doc_id": a["doc_id"], "position": a["position"], "context": a["context"]})
    return out


def test_filters_sort_and_pages_match_the_rows_and_the_sql_reproduces_each_page(lake):
    rows = known_rows()
    with LakeQuery(lake) as q:
        f = LabelFilter(mse_min=0.5, mse_max=1.5, status="ok", keyword="WEATHER|music", sort="mse", descending=False,
                        page_size=7)
        want = sorted((r for r in rows if 0.5 <= r["mse"] <= 1.5 and r["status"] == "ok"
                       and ("weather" in r["explanation"] or "music" in r["explanation"])),
                      key=lambda r: (r["mse"], r["act_id"]))
        assert len(want) == 30  # 10 per shard: two topics of the 20 rows in the middle of the mse range
        got, page = [], 0
        while True:
            p = label_page(q, LabelFilter(**{**f.__dict__, "page": page}))
            assert p["total"] == len(want) and p["page_size"] == 7
            assert p["columns"] == {"flags": True, "source": True}  # explanations v3 and activations v3 have them
            assert q.run(p["sql"], limit=None).to_pylist() == p["rows"]  # "open as SQL" shows what ran
            got += p["rows"]
            if not p["rows"]:
                break
            page += 1
        assert page == 5  # four pages of 7, one of 2, then an empty one
        assert [r["act_id"] for r in got] == [r["act_id"] for r in want]
        first = got[0]
        src = next(r for r in rows if r["act_id"] == first["act_id"])
        assert (first["doc_id"], first["position"], first["context"]) == (src["doc_id"], src["position"],
                                                                          src["context"])
        assert "regexp_matches(e.explanation, 'WEATHER|music', 'i')" in p["sql"] and "e.mse >= 0.5" in p["sql"]

        worst = label_page(q, LabelFilter(page_size=5))  # default: mse descending
        assert [r["mse"] for r in worst["rows"]] == sorted([r["mse"] for r in rows], reverse=True)[:5]
        assert worst["total"] == 120

        music = label_page(q, LabelFilter(feature="  The text is about music.  ", page_size=200))
        assert music["total"] == 30 and all(r["explanation"].startswith("The text is about music.")
                                            for r in music["rows"])
        assert label_page(q, LabelFilter(feature="about music"))["total"] == 0  # a feature matches whole
        assert label_page(q, LabelFilter(av="toy-av"))["total"] == 120
        assert label_page(q, LabelFilter(av="other-av"))["rows"] == []
        # values are quoted, never spliced: a quote is a character to look for, and the query stays one statement
        quoted = label_page(q, LabelFilter(keyword="o'brien", av="x' OR '1'='1"))
        assert quoted["total"] == 0 and "'x'' OR ''1''=''1'" in quoted["sql"]
        by_cos = label_page(q, LabelFilter(sort="cos", descending=True, status="no_tags"))
        assert by_cos["total"] == 3 and all(r["explanation"] is None for r in by_cos["rows"])


def test_document_lists_the_positions_of_the_activations_document(lake):
    acts, expl = shard_rows(1)
    act = acts.to_pylist()[5]  # document d1-1, position 11
    with LakeQuery(lake) as q:
        d = document(q, act["act_id"])
    assert (d["doc_id"], d["selected"], d["layer"]) == ("d1-1", 11, 1)
    assert [p["position"] for p in d["positions"]] == [10, 11, 12, 13]
    mse = np.linspace(0.05, 1.95, 40)
    p11 = d["positions"][1]
    assert p11["act_id"] == act["act_id"] and p11["explanations"] == 1
    assert p11["mse"] == pytest.approx(mse[5]) and p11["explanation"].startswith(f"The text is about {TOPICS[1]}.")
    assert p11["context"] == "context 1 5" and p11["token"] == " tok"


BAD_FILTERS = [
    (dict(mse_min=-0.1), "mse_min: -0.1 is outside 0..4"),
    (dict(mse_max=4.5), "mse_max: 4.5 is outside 0..4"),
    (dict(mse_min=1.0, mse_max=0.5), "mse_min 1.0 is above mse_max 0.5.*Fix: swap them"),
    (dict(status="good"), "status: 'good' is not one of ok, no_tags, truncated, error"),
    (dict(flag="degenrate"), "flag: 'degenrate' is not a quality flag. Fix: pick one of template, degenerate"),
    (dict(recipe="zz9"), "recipe: 'zz9' is not a recipe hash.*Fix:"),
    (dict(keyword="   "), "keyword is empty. Fix:"),
    (dict(keyword="rain(("), "keyword: 'rain\\(\\(' is not a valid regex.*Fix: escape"),
    (dict(feature=""), "feature is empty. Fix:"),
    (dict(sort="explanation"), "sort: 'explanation' is not sortable. Fix: sort by one of mse, cos"),
    (dict(page_size=0), "page_size: 0 is outside 1..200"),
    (dict(page_size=500), "page_size: 500 is outside 1..200"),
    (dict(page=-1), "page: -1 is negative. Fix: pages count from 0"),
]


def test_bad_filters_are_refused_with_the_fix(lake):
    from nla.av import STATUSES

    assert BROWSE_STATUSES == STATUSES  # the filter knows every status the AV writes
    before = versions(lake)
    with LakeQuery(lake) as q:
        for kw, match in BAD_FILTERS:  # one lake for all (a lake per case cost 3 s)
            with pytest.raises(NLAInputError, match=match):
                label_page(q, LabelFilter(**kw))
    assert versions(lake) == before


def test_bad_documents_and_an_empty_lake_are_refused(lake, tmp_path):
    with LakeQuery(lake) as q:
        with pytest.raises(NLAInputError, match="act_id 'abc123' is not in this lake's activations. Fix: pick a row"):
            document(q, "abc123")
        with pytest.raises(NLAInputError, match="act_id: \"x' OR 1=1\" is not an activation id. Fix:"):
            document(q, "x' OR 1=1")
    with LakeQuery(Lake(tmp_path / "empty")) as q:
        with pytest.raises(NLAInputError, match="has no activations or explanations table yet.*Fix: label a corpus"):
            label_page(q, LabelFilter())
