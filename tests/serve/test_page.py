"""The web page in headless Chromium against the real server: paste a text, click a token, read its explanation,
scores and nearest labeled activations, then use the lake view. Saves a screenshot to tests/serve/artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.groups import missing, need_module
from tests.serve.cdp import Chromium, find_chromium

ARTIFACTS = Path(__file__).parent / "artifacts"
TEXT = "a heavy storm moved over oslo last night . the rain kept falling on the coast ."


@pytest.fixture
def browser(tmp_path):
    binary = find_chromium()
    if binary is None:
        missing("Chromium", "install Debian's `chromium` package (python3 dev.py test does, as root, with apt-get)")
    need_module("websockets.sync.client", "pip install -e '.[dev]'")
    b = Chromium(binary, tmp_path / "profile")
    yield b
    b.close()


def count(selector: str) -> str:
    return f"document.querySelectorAll({selector!r}).length"


def test_page_explains_a_clicked_token_and_shows_the_lake(server, browser):
    browser.navigate(f"{server.url}/#token={server.token}")  # the fragment hands the page its bearer token
    browser.wait_for("document.getElementById('models').textContent.startsWith('AV ')")
    assert "token" not in browser.eval("location.href")  # the page drops the token from the address bar

    browser.click("#text")
    browser.type(TEXT)  # as a paste inserts it
    browser.click("#tokenize")
    browser.wait_for(f"{count('.tok')} > 10")
    assert browser.eval("document.querySelector('.tok.special') !== null")  # BOS shown, not clickable

    browser.click('.tok[data-pos="3"]')  # " storm"
    browser.wait_for("document.getElementById('explanation').textContent.startsWith('The text is about')")
    scores = browser.wait_for("(() => { const t = document.getElementById('scores').textContent; "
                              "return t.includes('mse 0.') || t.includes('mse 1.') ? t : ''; })()")
    assert "status ok" in scores and "cos" in scores
    browser.wait_for(f"{count('#nearest tbody tr')} >= 8")
    nearest = browser.eval("document.querySelector('#nearest tbody tr').textContent")
    assert "The text is about" in nearest
    assert browser.eval("document.querySelector('.tok.selected').dataset.pos") == "3"

    browser.click("#worst")
    browser.wait_for(f"{count('#lake-results tbody tr')} === 20")
    mses = browser.eval("[...document.querySelectorAll('#lake-results tbody tr')].map(r => +r.cells[1].textContent)")
    assert mses == sorted(mses, reverse=True)
    browser.click("#best")
    browser.wait_for("/^best reconstructed: \\d+ rows$/.test(document.getElementById('lake-status').textContent)")
    best = browser.eval("[...document.querySelectorAll('#lake-results tbody tr')].map(r => +r.cells[1].textContent)")
    assert len(best) == 20 and best == sorted(best) and best[0] <= mses[-1]
    browser.click("#keyword")
    browser.type("weather")
    browser.click("#kw-form button")
    browser.wait_for("/^keyword .*: \\d+ rows$/.test(document.getElementById('lake-status').textContent)")
    rows = browser.eval("[...document.querySelectorAll('#lake-results tbody tr')].map(r => r.textContent)")
    assert rows and all("weather" in r for r in rows)
    browser.click("#search-text")
    browser.type("The text is about weather.")
    browser.click("#ts-form button")
    browser.wait_for("/^nearest to the text: \\d+ rows \\(found by (index|index\\+scan|exact)\\)$/.test("
                     "document.getElementById('lake-status').textContent)")  # the page says how it searched
    assert browser.eval(count("#lake-results tbody tr")) == 10

    shot = browser.screenshot(ARTIFACTS / "page.png")
    assert shot.stat().st_size > 20_000
    assert browser.errors == [], browser.errors
