"""The Neuronpedia mount of the real `nla serve` (toy kit): the request bodies their README, openapi.json and web app
send, answered in their shapes; SSE read frame by frame; chat messages; negative positions; every error shape; and a
client written for their API that works with only the base URL changed.

The key sets below are their wire contract (apps/nla/tests/test_frame_contract.py and openapi.json pin them).
The shared server runs with limits.max_concurrent_explains=1 (tests/serve/conftest.py), as their default.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

MOUNT = "/neuronpedia"
TEXT = "a heavy storm moved over oslo last night ."
CHAT = [{"role": "user", "content": "what happened in oslo ?"},
        {"role": "assistant", "content": "a heavy storm moved over oslo last night ."}]
EXPLAIN_RESULT = {"token", "token_id", "position", "l2_norm", "description", "mse", "cosine_similarity", "generated",
                  "fragment_index", "fragment_count", "role", "section", "channel", "message_index"}
EXPLAIN_META = {"layer_index", "total", "prompt_length"}
EXPLAIN_PROGRESS = {"position", "text", "done"}
DESCRIBE_PROGRESS = {"index", "text", "done"}
DESCRIPTION = {"description", "mse", "cosine_similarity"}
TOKEN_INFO = {"token", "token_id", "position", "fragment_index", "fragment_count", "role", "section", "channel",
              "message_index"}
HEALTH = {"status", "verbalizer_model", "reconstructor_available", "completion_available", "num_cuda_devices",
          "max_concurrent", "max_concurrent_explains", "source_max_concurrent", "reconstructor_max_concurrent",
          "max_describe_requests", "limits", "d_model", "extraction_layer", "source_truncated"}
LIMITS = {"max_input_chars", "max_positions_per_request", "max_new_tokens", "max_describe_batch",
          "max_description_chars", "max_completion_tokens"}


def call(server, path: str, body: Any = None, *, key: str | None = "default", header: str = "X-SECRET-KEY",
         method: str | None = None) -> tuple[int, Any]:
    """(status, JSON) of one request to the mount, authenticated the way their clients do."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers[header] = server.token if key == "default" else key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + MOUNT + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ok(server, path: str, body: Any = None) -> Any:
    status, data = call(server, path, body)
    assert status == 200, (path, status, data)
    return data


def frames(server, path: str, body: dict) -> Iterator[Any]:
    """The SSE frames of one streamed request, each as it arrives: JSON objects, then the string '[DONE]'."""
    req = urllib.request.Request(server.url + MOUNT + path, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json", "X-SECRET-KEY": server.token})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r:
            line = line.decode("utf-8").rstrip("\r\n")
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                yield payload if payload == "[DONE]" else json.loads(payload)
            else:
                assert line == "", f"not an SSE data line: {line!r}"


def test_health_json_with_limits_at_the_base_url(server):
    for path in ("/", ""):
        h = ok(server, path)
        assert HEALTH <= set(h) and set(h["limits"]) == LIMITS and h["status"] == "ok"
    assert h["d_model"] == 128 and h["extraction_layer"] == 1 and h["reconstructor_available"] is True
    assert h["completion_available"] is False and h["source_truncated"] is True
    assert h["limits"]["max_positions_per_request"] == 64 and h["max_concurrent_explains"] == 1


def test_auth_headers_map_onto_the_token(server):
    status, err = call(server, "/", key=None)
    assert status == 401 and set(err) == {"detail"} and "X-SECRET-KEY" in err["detail"]
    status, err = call(server, "/", key="wrong")
    assert status == 403 and "Invalid secret key" in err["detail"]
    assert call(server, "/", header="x-api-key")[0] == 200
    assert call(server, "/", header="Authorization", key=f"Bearer {server.token}")[0] == 200
    assert call(server, "/tokenize", {"text": TEXT}, key="wrong")[0] == 403


def test_explain_readme_body_negative_positions_and_unknown_fields(server):
    toks = ok(server, "/tokenize", {"text": TEXT})
    n = toks["prompt_length"]
    body = {"text": TEXT, "positions": [-1], "temperature": 0.7, "modelId": "ignored", "nlaSourceId": "ignored"}
    out = ok(server, "/explain", body)
    assert out["layer_index"] == 1 and len(out["results"]) == 1
    (r,) = out["results"]
    assert set(r) == EXPLAIN_RESULT and r["position"] == n - 1 and r["token"] == toks["tokens"][-1]["token"]
    assert isinstance(r["description"], str) and r["l2_norm"] > 0 and r["generated"] is False
    assert r["mse"] is None or 0 <= r["mse"] <= 4
    both = ok(server, "/explain", {"text": TEXT, "positions": [2, -2], "reverse": False, "temperature": 0,
                                   "max_new_tokens": 64})["results"]
    assert [x["position"] for x in both] == [2, n - 2]
    # the same activations explained greedily through /v1: one implementation underneath
    v1 = ok_v1(server, "/v1/explain", {"text": TEXT, "positions": [2, n - 2], "max_new_tokens": 64})["results"]
    assert [x["description"] for x in both] == [x["explanation"] for x in v1]
    assert [x["mse"] for x in both] == pytest.approx([x["mse"] for x in v1], abs=1e-5)
    assert all(abs(x["mse"] - 2 * (1 - x["cosine_similarity"])) < 1e-4 for x in both)


def ok_v1(server, path: str, body: dict) -> dict:
    status, data = server.call(path, body)
    assert status == 200, (path, status, data)
    return data


def test_explain_all_positions_reversed_and_chat_messages(server):
    toks = ok(server, "/tokenize", {"text": TEXT})["tokens"]
    out = ok(server, "/explain", {"text": TEXT, "max_new_tokens": 8})["results"]
    readable = [t["position"] for t in toks if t["position"] > 0]  # position 0 is BOS: special, not explained
    assert [r["position"] for r in out] == readable[::-1]  # their default reverse=true: last to first
    chat = {"messages": CHAT, "add_generation_prompt": False, "enable_thinking": False}
    ctoks = ok(server, "/tokenize", chat)["tokens"]
    content = [t["position"] for t in ctoks if t["role"] == "assistant" and t["section"] == "content"]
    assert content and {t["section"] for t in ctoks} >= {"header", "content", "footer", "scaffold"}
    res = ok(server, "/explain", {**chat, "positions": content[-2:], "max_new_tokens": 8})["results"]
    assert [(r["position"], r["role"], r["section"], r["message_index"]) for r in res] == \
           [(p, "assistant", "content", 1) for p in content[-2:][::-1]]


def test_explain_streams_frame_by_frame(server):
    got = list(frames(server, "/explain", {"text": TEXT, "positions": [3, -1], "temperature": 0,
                                           "max_new_tokens": 64}))
    meta, *body, done = got
    assert set(meta) == EXPLAIN_META and meta["total"] == 2 and meta["layer_index"] == 1 and done == "[DONE]"
    progress = [f for f in body if "description" not in f]
    finals = [f for f in body if "description" in f]
    assert all(set(f) == EXPLAIN_PROGRESS and f["done"] is False for f in progress)
    assert all(set(f) == EXPLAIN_RESULT for f in finals) and len(finals) == 2
    assert body.index(finals[0]) > body.index(progress[0])  # partial text comes before the results
    n = meta["prompt_length"]
    for pos in (3, n - 1):  # each position's text grew token by token: a real stream, not one reply cut up
        texts = [f["text"] for f in progress if f["position"] == pos]
        assert len(texts) > 3 and all(b.startswith(a[:-1]) and len(b) >= len(a) for a, b in zip(texts, texts[1:]))
    plain = ok(server, "/explain", {"text": TEXT, "positions": [3, -1], "temperature": 0, "max_new_tokens": 64})
    assert finals == plain["results"]


def test_the_web_apps_own_bodies(server):
    """What Neuronpedia's web app sends its NLA server (app/api/nla/explain, explain-saelens, the autointerp scorer)."""
    got = list(frames(server, "/explain", {"text": TEXT, "temperature": 0.7, "stream": True, "positions": [5, 6],
                                           "max_new_tokens": 256}))
    assert set(got[0]) == EXPLAIN_META and got[-1] == "[DONE]"
    assert sorted(f["position"] for f in got[1:-1] if "description" in f) == [5, 6]
    vector = ok(server, "/extract", {"text": TEXT})["tokens"][3]["activation"]
    body = {"activations": [vector], "temperature": 0.7, "max_new_tokens": 200}
    streamed = list(frames(server, "/describe", {**body, "stream": True}))
    assert [set(f) for f in streamed[:-1] if "description" in f] == [DESCRIPTION] and streamed[-1] == "[DONE]"
    assert ok(server, "/describe", {**body, "stream": False})["results"][0]["description"]


def test_describe_score_compare_extract_plain_and_streamed(server):
    ext = ok(server, "/extract", {"text": TEXT, "modelId": "ignored"})
    assert ext["layer_index"] == 1 and ext["tokens"][0]["position"] == 1
    assert {k for t in ext["tokens"] for k in t} == {"token", "token_id", "position", "activation", "l2_norm"}
    acts = [t["activation"] for t in ext["tokens"]]
    assert len(acts[0]) == 128 and ext["tokens"][0]["l2_norm"] == pytest.approx(np.linalg.norm(acts[0]), rel=1e-5)
    v1 = ok_v1(server, "/v1/extract", {"text": TEXT, "positions": [1]})["activations"][0]["vector"]
    assert np.allclose(v1, acts[0], atol=1e-6)

    described = ok(server, "/describe", {"activations": acts[:2], "temperature": 0, "max_new_tokens": 64})
    assert [set(r) for r in described["results"]] == [DESCRIPTION] * 2
    got = list(frames(server, "/describe", {"activations": acts[:2], "temperature": 0, "max_new_tokens": 64}))
    assert got[-1] == "[DONE]"
    progress = [f for f in got[:-1] if "description" not in f]
    assert progress and all(set(f) == DESCRIBE_PROGRESS for f in progress) and {f["index"] for f in progress} == {0, 1}
    assert [f for f in got[:-1] if "description" in f] == described["results"]

    desc = described["results"][0]["description"]
    score = ok(server, "/score", {"description": desc, "activation": acts[0]})
    assert set(score) == {"mse", "cosine_similarity"}
    assert score["mse"] == pytest.approx(described["results"][0]["mse"], abs=1e-5)
    cmp = ok(server, "/compare", {"activation_a": acts[0], "activation_b": acts[1], "temperature": 0})
    assert set(cmp) == {"description", "diff_norm", "mse", "cosine_similarity"}
    assert cmp["diff_norm"] == pytest.approx(np.linalg.norm(np.subtract(acts[0], acts[1])), rel=1e-5)


def test_tokenize_text_and_messages(server):
    out = ok(server, "/tokenize", {"text": TEXT})
    assert out["text"] == TEXT and out["prompt_length"] == len(out["tokens"])
    assert all(set(t) == TOKEN_INFO and t["role"] is None for t in out["tokens"])
    assert "".join(t["token"] for t in out["tokens"][1:]) == TEXT
    chat = ok(server, "/tokenize", {"messages": CHAT[:1]})  # add_generation_prompt defaults to true
    assert chat["text"].endswith("assistant\n") and chat["prompt_length"] == len(chat["tokens"])
    user = "".join(t["token"] for t in chat["tokens"] if t["role"] == "user" and t["section"] == "content")
    assert user == CHAT[0]["content"]


ERRORS = [  # (path, body, status, words in the detail)
    ("/describe", {"activations": [[0.5] * 5]}, 400, "d_model"),
    ("/explain", {"text": TEXT, "positions": [99]}, 400, "out of range"),
    ("/explain", {"text": TEXT, "positions": [0]}, 400, "special token"),
    ("/explain", {"positions": [1]}, 400, "text` or `messages"),
    ("/explain", {"text": TEXT, "max_new_tokens": 100000}, 400, "max_new_tokens"),
    ("/compare", {"activation_a": [1.0] * 128, "activation_b": [1.0] * 128}, 400, "same vector"),
    ("/tokenize", {"messages": [{"content": "no role"}]}, 422, None),
    ("/explain", {"text": TEXT, "temperature": "hot"}, 422, None),
    ("/describe", {"temperature": 0.7}, 422, None),
    ("/completion", {"text": "the storm", "completion_tokens": 16}, 503, "truncated"),
]


@pytest.mark.parametrize("path,body,status,words", ERRORS, ids=[f"{e[0]}-{e[2]}-{i}" for i, e in enumerate(ERRORS)])
def test_error_shapes(server, path, body, status, words):
    got, err = call(server, path, body)
    assert got == status and set(err) == {"detail"}, (got, err)
    if words is None:  # FastAPI's validation list, as their server answers it
        assert isinstance(err["detail"], list) and {"loc", "msg", "type"} <= set(err["detail"][0])
    else:
        assert words in err["detail"] and "Fix" in err["detail"] or status == 503


def test_a_second_explain_while_one_streams_gets_429_at_once(server):
    # hot sampling rarely picks the stop token: every position decodes all 256 tokens, so the stream stays open
    stream = frames(server, "/explain", {"text": TEXT, "temperature": 5.0, "max_new_tokens": 256})
    assert set(next(stream)) == EXPLAIN_META  # the first request holds the only slot until its stream ends
    status, err = call(server, "/explain", {"text": TEXT, "positions": [-1]})
    assert status == 429 and "slot" in err["detail"]
    assert list(stream)[-1] == "[DONE]"
    assert call(server, "/explain", {"text": TEXT, "positions": [-1], "max_new_tokens": 4})[0] == 200


def test_v1_stays_strict_about_unknown_fields(server):
    status, err = server.call("/v1/explain", {"text": TEXT, "positions": [2], "modelId": "x"})
    assert status == 422 and "modelId" in err["error"]


class TheirClient:
    """A client written for Neuronpedia's NLA API (as their README and the toolkit call it): base URL + key, extra
    routing fields in bodies, x-api-key auth, positions batched by 16. Nothing in it knows about our server."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url, self.api_key = base_url.rstrip("/"), api_key

    def _post(self, path: str, payload: dict) -> Any:
        req = urllib.request.Request(f"{self.base_url}/{path.lstrip('/')}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json", "Accept": "application/json",
                                              "x-api-key": self.api_key}, method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def health(self) -> dict:
        req = urllib.request.Request(self.base_url + "/", headers={"x-api-key": self.api_key})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def explain(self, positions: list[int], *, text: str | None = None, messages: list | None = None) -> list[dict]:
        out: list[dict] = []
        wanted = sorted(set(positions))
        for start in range(0, len(wanted), 16):
            payload = {"modelId": "gemma-3-27b-it", "nlaSourceId": "kitft-l41", "positions": wanted[start:start + 16],
                       "temperature": 0.7, **({"text": text} if text is not None else {"messages": messages})}
            out += self._post("/explain", payload)["results"]
        return sorted(out, key=lambda r: r["position"])

    def describe(self, vectors: list[list[float]]) -> list[dict]:
        return self._post("/describe", {"activations": vectors, "temperature": 0.7, "max_new_tokens": 200})["results"]


def test_a_client_for_their_api_works_with_only_the_base_url_changed(server):
    client = TheirClient(server.url + MOUNT, server.token)
    assert client.health()["status"] == "ok"
    toks = client._post("/tokenize", {"messages": CHAT})["tokens"]
    assistant = [t["position"] for t in toks if t["role"] == "assistant" and t["section"] == "content"]
    explained = client.explain(assistant[:3], messages=CHAT)
    assert [e["position"] for e in explained] == assistant[:3]
    assert all(isinstance(e["description"], str) and e["l2_norm"] > 0 for e in explained)
    acts = [t["activation"] for t in client._post("/extract", {"text": TEXT})["tokens"][:1]]
    assert isinstance(client.describe(acts)[0]["description"], str)
