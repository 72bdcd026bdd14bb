"""Quality flags planted on the toy kit: each failure is flagged, clean toy explanations are not.

Row flags: the real toy AV cut short (truncated), and planted texts for what the toy AV cannot produce (a loop, text
in another script, an empty body). Lake flags: a real lake of toy-kit vectors where one text was planted on
unrelated vectors (template) and a few inputs were scaled down (low_norm); nla.quality.lakepass finds exactly those.
"""

from __future__ import annotations

import numpy as np
import pytest

from nla.av import Generation
from nla.lake.query import LakeQuery
from nla.lake.rows import activation_table, explanation_table, generation_columns
from nla.lake.store import Lake
from nla.quality.flags import row_flags
from nla.quality.lakepass import refresh
from nla.quality.settings import QualitySettings
from nla.schemas import ACTIVATIONS, EXPLANATIONS

CLEAN = 'The text is about weather.\n\nIt mentions oslo and leo.\n\nIt ends with "heavy storm".'


@pytest.mark.parametrize("text, status, raw, flags", [
    (CLEAN, "ok", "", []),
    ("the storm " * 12, "ok", "", ["degenerate"]),  # a repetition loop
    ("文本是关于天气的。它提到了奥斯陆和利奥。", "ok", "", ["degenerate"]),  # the classic failed-injection CJK output
    ("Текст о погоде в Осло.", "ok", "", ["degenerate"]),  # Cyrillic, where Latin is expected
    (" . , ", "ok", "", ["degenerate"]),  # an empty body
    (None, "truncated", "<explanation>The text is about " + "rain " * 40, ["degenerate", "truncated"]),
    (None, "truncated", "<explanation>The text is about weather. It mentions", ["truncated"]),
    (None, "no_tags", "The text is about weather.", ["no_tags"]),
    (None, "error", "RuntimeError: CUDA out of memory", []),
])
def test_row_flags(text, status, raw, flags):
    assert row_flags(text, raw, status) == flags


def test_expected_scripts_are_a_setting():
    assert row_flags("Текст о погоде в Осло.", "", "ok", QualitySettings(scripts=["LATIN", "CYRILLIC"])) == []


@pytest.fixture(scope="module")
def av(toy_kit):
    from nla.client import NLAClient

    return NLAClient(toy_kit / "av", batch_size=64)


def test_the_toy_av_cut_short_is_truncated_and_nothing_else(av):
    rng = np.random.default_rng(0)
    gens = av.explain(rng.standard_normal((6, 128)).astype(np.float32), temperature=0,
                                             max_new_tokens=6)
    t = explanation_table([f"a{i}" for i in range(6)], **generation_columns(gens), av="toy", ar="", samples=[0] * 6,
                          shard="s", run_id="r")
    assert t.column("status").to_pylist() == ["truncated"] * 6
    assert t.column("flags").to_pylist() == [["truncated"]] * 6


def test_lake_flags_find_the_planted_template_and_low_norm_inputs(tmp_path, toy_kit, av):
    """Toy-kit activations (their real explanations from the toy AV), in 3 shards; planted: one text on 12 unrelated
    vectors (template) and 4 inputs scaled to 2% of their norm (low_norm)."""
    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.toy.corpus import generate_corpus

    docs = generate_corpus(30, 31)
    ex = Extractor.from_pretrained(toy_kit / "base", ExtractConfig(layer=1, positions_per_doc=6, min_position=8))
    cols = ex([d.text for d in docs], [d.doc_id for d in docs])
    n = len(cols["vector"])
    assert n >= 150
    low = np.array([n // 3, 2 * n // 3])  # planted low-norm inputs (1% of ~180 rows: the lowest ~2 are flagged)
    cols["vector"][low] *= 0.02
    gens = av.explain(cols["vector"], temperature=0, max_new_tokens=48)
    template = np.arange(5, n, n // 12)[:12]  # planted: one text for 12 vectors spread over the whole corpus
    for i in template:
        gens[i] = Generation(explanation="The text is a research paper about the Fibonacci sequence.",
                             raw_output="<explanation>...</explanation>", status="ok", n_tokens=12)
    lake = Lake(tmp_path / "lake")
    for s, part in enumerate(np.array_split(np.arange(n), 3)):
        acts = activation_table({k: v[part] for k, v in cols.items()}, base_model="toy", layer=1, shard=f"s{s}",
                                run_id="r", recipe="a")
        lake.commit_shard(ACTIVATIONS, acts, shard=f"s{s}", run_id="r", recipe="a")
        expl = explanation_table(acts.column("act_id").to_pylist(), **generation_columns([gens[i] for i in part]),
                                 av="toy", ar="", samples=[0] * len(part), shard=f"s{s}", run_id="r", recipe="x")
        lake.commit_shard(EXPLANATIONS, expl, shard=f"s{s}", run_id="r", recipe="x")
    logs = []
    r = refresh(lake, "x", log=logs.append)
    assert r.templates.flagged == ["the text is a research paper about the fibonacci sequence"]
    assert r.templates.spread[r.templates.flagged[0]] > 0.9
    clean = {k: v for k, v in r.templates.spread.items() if k not in r.templates.flagged}
    assert max(clean.values(), default=0.0) < QualitySettings().template_spread  # real toy texts that repeat: kept
    with LakeQuery(lake) as q:
        got = q.run("SELECT a.position, a.doc_id, e.flags FROM explanations e JOIN activations a USING (act_id)",
                    limit=None).to_pylist()
    flagged = {(g["doc_id"], g["position"]): g["flags"] for g in got if g["flags"]}
    key = [(str(cols["doc_id"][i]), int(cols["position"][i])) for i in range(n)]
    assert {key[i] for i in template} | {key[i] for i in low} == set(flagged)
    assert all(flagged[key[i]] == ["template"] for i in template)
    assert all(flagged[key[i]] == ["low_norm"] for i in low)
    assert logs == ["[quality] recipe x: 1 template texts, low_norm thresholds for 1 (layer, source) groups; flags "
                    "updated in 3 shards"]
    before = {t: lake.table(t).version() for t in lake.names()}
    assert refresh(lake, "x").shards_rewritten == 0 and {t: lake.table(t).version() for t in lake.names()} == before
