"""Streaming explain (nla/av_stream.py) gives the same Generations as `explain`, with cumulative partial text."""

from __future__ import annotations

import numpy as np
import pytest

from nla.av_stream import Partial


@pytest.fixture(scope="module")
def client(pair):
    from nla.client import NLAClient

    return NLAClient(pair[0])


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 1.0, "seed": 7}])
def test_stream_ends_with_what_explain_gives(client, sampling):
    v = np.random.default_rng(0).standard_normal((3, client.meta.d_model)).astype(np.float32)
    events = list(client.explain_stream(v, max_new_tokens=12, **sampling))
    *partials, final = events
    assert final == client.explain(v, max_new_tokens=12, **sampling)
    assert partials and all(isinstance(p, Partial) for p in partials)
    seen: dict[int, str] = {}
    for p in partials:  # each row's text only grows, and ends as the row's raw output
        for row, text in p.texts.items():
            assert text.startswith(seen.get(row, "")[:-1]) and text != seen.get(row)
            seen[row] = text
    assert {r: final[r].raw_output for r in seen} == seen


def test_closing_the_stream_early_stops_generation(client):
    v = np.ones((1, client.meta.d_model), np.float32)
    stream = client.explain_stream(v, max_new_tokens=200, temperature=0.0)
    assert isinstance(next(stream), Partial)
    stream.close()  # joins the worker thread: generation stopped at its next step
