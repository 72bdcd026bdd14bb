"""The explorer page in headless Chromium against the real server, driven as a user would: the overview on load
(charts, counts, runs) and a labeling run's progress refreshed while it commits; browse (filter, sort, page, open as
SQL, a shared link reproducing the view, a row's document); compare two recipes; the token strip (one batched request,
hover, keyboard, nearest activations). Each user action is checked to issue at most one request, and the basics of
accessibility (every control labeled, keyboard focus) are checked. Screenshots of each view go to
tests/serve/artifacts/ (docs/img/ holds copies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.groups import missing, need_module
from tests.serve.cdp import Chromium, find_chromium
from tests.serve.conftest import Relabel

ARTIFACTS = Path(__file__).parent / "artifacts"
TEXT = "a heavy storm moved over oslo last night . the rain kept falling on the coast ."


@pytest.fixture
def browser(tmp_path):
    binary = find_chromium()
    if binary is None:
        missing("Chromium", "install Debian's `chromium` package (python3 dev.py test does, as root, with apt-get)")
    need_module("websockets.sync.client", "pip install -e '.[dev]'")
    b = Chromium(binary, tmp_path / "profile", width=1280, height=900)
    yield b
    b.close()


def count(selector: str) -> str:
    return f"document.querySelectorAll({selector!r}).length"


def text(selector: str) -> str:
    return f"document.querySelector({selector!r}).textContent"


class Requests:
    """The page's API requests, as the browser's resource timing records them."""

    def __init__(self, browser: Chromium, *, since_load: bool = False) -> None:
        self.b = browser
        self.b.eval("performance.setResourceTimingBufferSize(100000)")
        self.seen = 0
        if not since_load:
            self.since()  # from now on

    def since(self) -> list[str]:
        """The /v1 paths requested since the last call."""
        names = self.b.eval("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
                            ".filter(p => p.startsWith('/v1/'))")
        new, self.seen = names[self.seen:], len(names)
        return new


def column(browser: Chromium, table: str, i: int) -> list[str]:
    return browser.eval(f"[...document.querySelectorAll('{table} tbody tr')].map(r => r.cells[{i}].textContent)")


def test_explorer_views_in_a_real_browser(server, browser, toy_kit):
    b = browser
    b.navigate(f"{server.url}/#token={server.token}")  # the fragment hands the page its bearer token
    b.wait_for("document.getElementById('models').textContent.startsWith('AV ')")
    assert "token" not in b.eval("location.href")  # the page drops the token from the address bar
    req = Requests(b, since_load=True)

    # ---- overview on load: counts, both charts, recipes, features, runs -------------------------------------------
    b.wait_for(f"{count('#ov-runs tbody tr')} > 0 && {count('#ov-hist canvas')} > 0 && {count('#ov-fve canvas')} > 0")
    _, o = server.call("/v1/lake/overview")
    cards = b.eval("[...document.querySelectorAll('#ov-counts .card')].map(c => c.textContent)")
    assert cards == [f"{t['rows']:,}{t['name']} (v{t['version']})" for t in o["tables"]]
    assert b.eval(count("#ov-features tbody tr")) == len(o["features"]) == 20
    assert column(b, "#ov-recipes", 5) == [f"{r['rows']:,}" for r in o["recipes"]]
    assert "label-serve-test" in column(b, "#ov-runs", 0)
    assert b.eval("document.getElementById('ov-hist').getAttribute('role')") == "img"
    assert "mean mse" in b.eval("document.getElementById('ov-hist').getAttribute('aria-label')")
    assert sorted(req.since()) == ["/v1/lake/overview", "/v1/models"]  # one request each: the header, the view

    # ---- a labeling run, watched while it commits (the page polls only while one runs) ------------------------------
    run = Relabel(toy_kit, server.lake, temperature=0.7, seed=11, rows=6)
    run.start()
    b.navigate(f"{server.url}/#/overview")
    b.wait_for(f"{text('#ov-progress')}.includes('0 of 2 shards committed')")
    run.commit()
    line = b.wait_for(f"(() => {{ const t = {text('#ov-progress')}; return t.includes('1 of 2 shards committed') "
                      "? t : ''; })()")  # no user action: the page refreshed itself
    assert "6 rows" in line and "shards/min · ETA" in line and "errors: none" in line
    assert b.eval("document.querySelector('#ov-progress progress').value") == 1
    b.screenshot(ARTIFACTS / "explorer-progress.png", full=False)
    run.finish()
    b.wait_for(f"document.getElementById('ov-progress').hidden && {count('#ov-recipes tbody tr')} >= 2 && "
               f"{json.dumps(run.run_id)} === document.querySelector('#ov-runs tbody tr').cells[0].textContent")
    b.screenshot(ARTIFACTS / "explorer-overview.png", full=False)

    # ---- a run whose driver was killed: its row stays running; long without a commit, the panel says so -----------
    import datetime as dt

    from nla.labeling.progress import RunRecorder
    from nla.lake.store import Lake, now

    dead = RunRecorder(Lake(server.lake), "label-killed", job="label", config={}, recipes=None, shards_total=2,
                       started_at=now() - dt.timedelta(hours=2))
    dead.record("running")
    b.navigate(f"{server.url}/#/overview")
    line = b.wait_for(f"(() => {{ const t = {text('#ov-progress')}; return t.includes('label-killed') ? t : ''; }})()")
    assert "no commit for 2.0 h" in line and "the same command again resumes it" in line and "ETA" not in line, line
    dead.record("interrupted", finished_at=now())
    b.wait_for("document.getElementById('ov-progress').hidden")
    req = Requests(b)

    # ---- browse: filter, sort, page, open as SQL, the shared link, a document ---------------------------------------
    b.click('nav a[data-view="browse"]')
    b.wait_for("/^rows 1–50 of /.test(document.getElementById('br-status').textContent)")
    assert req.since() == ["/v1/lake/labels"]
    b.click("#f-mse_min")
    b.type("0.2")
    b.click("#f-keyword")
    b.type("weather|music|science")
    b.eval("document.getElementById('f-page_size').value = '20'")
    b.click("#br-apply")
    _, want = server.call("/v1/lake/labels", {"mse_min": 0.2, "keyword": "weather|music|science",
                                                   "page_size": 20})
    assert want["total"] > 20
    b.wait_for(f"document.getElementById('br-status').textContent.startsWith('rows 1–20 of {want['total']}')")
    assert req.since() == ["/v1/lake/labels"]
    assert [float(x) for x in column(b, "#br-table", 0)] == [round(r["mse"], 3) for r in want["rows"]]
    b.click("#br-table th button")  # the mse header: sorted by mse, descending -> ascending
    b.wait_for("document.getElementById('br-status').textContent.endsWith('sorted by mse ascending')")
    assert req.since() == ["/v1/lake/labels"]
    mses = [float(x) for x in column(b, "#br-table", 0)]
    assert mses == sorted(mses) and mses[0] >= 0.2
    assert b.eval("document.querySelector('#br-table th').getAttribute('aria-sort')") == "ascending"
    b.click("#br-next")
    b.wait_for(f"document.getElementById('br-status').textContent.startsWith('rows 21–')")
    assert req.since() == ["/v1/lake/labels"]
    page2 = column(b, "#br-table", 6)
    assert min(float(x) for x in column(b, "#br-table", 0)) >= mses[-1]
    b.click("#br-open-sql")
    sql = b.eval(text("#br-sql-text"))
    assert "regexp_matches(e.explanation, 'weather|music|science', 'i')" in sql and "LIMIT 20 OFFSET 20" in sql
    assert req.since() == []
    _, ran = server.call("/v1/query", {"sql": sql, "limit": 20})  # the SQL shown gives the rows shown
    assert len(ran["rows"]) == len(page2)
    b.screenshot(ARTIFACTS / "explorer-browse.png", full=False)
    link = b.eval("document.getElementById('br-link').value")
    assert "mse_min=0.2" in link and "keyword=weather" in link and "page=1" in link
    first_rows = b.eval("[...document.querySelectorAll('#br-table tbody tr')].map(r => r.textContent)")
    b.navigate("about:blank")
    b.navigate(link)  # a shared link opens the same view, from nothing
    b.wait_for(f"{count('#br-table tbody tr')} > 0")
    assert b.eval("[...document.querySelectorAll('#br-table tbody tr')].map(r => r.textContent)") == first_rows
    assert b.eval("document.getElementById('f-keyword').value") == "weather|music|science"
    req = Requests(b)
    position, token = b.eval("(() => { const r = document.querySelector('#br-table tbody tr'); return "
                             "[[...r.cells].map(c => c.textContent).find(t => t.includes(' @ ')).split(' @ ')[1], "
                                 "r.querySelector('mark').textContent]; })()")
    b.click("#br-table tbody tr a")  # the row's document, the position highlighted
    b.wait_for("!document.getElementById('doc-body').hidden")
    assert req.since() == ["/v1/lake/document"]
    assert b.eval("document.querySelector('#doc-strip .tok.selected').dataset.pos") == position
    assert b.eval(text("#doc-context mark")) == token
    b.click("#doc-strip .tok:not(.selected)")  # another position of the same document: already on the page
    assert b.eval("document.querySelector('#doc-strip .tok.selected').dataset.pos") != position
    assert req.since() == [] and b.eval("location.hash").startswith("#/doc?act_id=")
    b.screenshot(ARTIFACTS / "explorer-document.png", full=False)

    # ---- compare two recipes -----------------------------------------------------------------------------------------
    b.click('nav a[data-view="compare"]')
    b.wait_for(f"{count('#cmp-a option')} >= 2")
    assert req.since() == ["/v1/lake/recipes"]  # the page was opened from a link: no overview to reuse
    _, recipes = server.call("/v1/lake/recipes")
    base = next(r["recipe"] for r in recipes["recipes"] if r["fields"]["sampling"]["temperature"] == 0.0)
    b.eval(f"document.getElementById('cmp-a').value = {json.dumps(base)}; "
           f"document.getElementById('cmp-b').value = {json.dumps(run.recipe)}")
    b.click("#cmp-go")
    b.wait_for(f"{count('#cmp-changed tbody tr')} === 12 && {count('#cmp-hist canvas')} > 0")
    assert req.since() == ["/v1/lake/compare"]
    _, c = server.call("/v1/lake/compare", {"a": base, "b": run.recipe, "top": 20})
    assert b.eval(text("#cmp-status")).startswith(f"12 shared activations · mean mse A {c['mse_a']:.3f} · "
                                                  f"B {c['mse_b']:.3f} · B − A = {c['diff']:.3f}")
    assert column(b, "#cmp-changed", 3) == [f"{r['diff']:.3f}" for r in c["changed"]]
    b.screenshot(ARTIFACTS / "explorer-compare.png", full=False)

    # ---- the token strip: one batch for the whole text, hover, keyboard, nearest ----------------------------------
    b.click('nav a[data-view="text"]')
    b.wait_for("!document.getElementById('explain').hidden")
    b.click("#text")
    b.type(TEXT)  # as a paste inserts it
    b.click("#tokenize")
    b.wait_for(f"{count('#strip button.tok')} > 10", timeout=60, say="#text-status")
    assert req.since() == ["/v1/strip"]  # every token explained and scored in one request
    _, strip = server.call("/v1/strip", {"text": TEXT, "temperature": 0, "max_new_tokens": 200})
    assert b.eval(count("#strip button.tok")) == len(strip["results"])
    assert b.eval(count("#strip .tok.special")) == sum(t["special"] for t in strip["tokens"]) == 1
    colours = b.eval("[...document.querySelectorAll('#strip button.tok')].map(e => e.style.background)")
    assert all(c.startswith("rgb") for c in colours) and len(set(colours)) > 3  # coloured by each mse
    flagged = [str(r["position"]) for r in strip["results"] if r["flags"]]  # underlined: a quality flag
    assert b.eval("[...document.querySelectorAll('#strip button.tok.flagged')].map(e => e.dataset.pos)") == flagged
    b.hover('#strip .tok[data-pos="3"]')  # " storm"
    third = strip["results"][2]
    hover = b.wait_for(f"{text('#hover-line')}")
    assert f"mse {third['mse']:.3f}" in hover and third["explanation"].split("\n")[0] in hover
    assert req.since() == []
    b.eval("document.querySelector('#strip .tok[data-pos=\"3\"]').focus()")
    b.key("Enter")  # the keyboard pins it, as a click does
    b.wait_for(f"{count('#nearest tbody tr')} >= 8")
    assert req.since() == ["/v1/search"]
    assert b.eval(text("#explanation")) == third["explanation"]
    assert b.eval("document.querySelector('#strip .tok.selected').getAttribute('aria-pressed')") == "true"
    assert "The text is about" in b.eval(text("#nearest tbody tr"))
    b.screenshot(ARTIFACTS / "explorer-text.png", full=False)

    # ---- accessibility basics: every control has a name, and the keyboard reaches the page -----------------------
    unnamed = b.eval("""[...document.querySelectorAll('input, select, textarea, button')].filter(e =>
        !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []
    assert b.eval("[...document.querySelectorAll('[role=img]')].every(e => e.getAttribute('aria-label'))")
    b.navigate(f"{server.url}/#/overview")
    b.wait_for(f"{count('#ov-runs tbody tr')} > 0")
    b.key("Tab")
    assert b.eval("document.activeElement.textContent") == "Skip to the content"
    for _ in range(3):  # past the header's docs link, to the views
        b.key("Tab")
    assert b.eval("document.activeElement.closest('nav') !== null")
    assert b.errors == [], b.errors
