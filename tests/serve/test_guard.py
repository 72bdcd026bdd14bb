"""nla.serve.security.Guard as an ASGI middleware in front of a small ASGI app that echoes the path it was given: the
Neuronpedia mount's auth answers and shapes, and the root rewrite (http.neuronpedia_at_root) that leaves our own
paths alone. The served mount itself is tested end to end in test_neuronpedia.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from nla.serve.security import Guard, token_digest

DIGEST = token_digest("s3cret")


async def echo(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def request(path: str, headers: dict[str, str] | None = None, *, at_root: bool = False) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "raw_path": path.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    asyncio.run(Guard(echo, settings=lambda: (DIGEST, 1024, at_root))(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("headers,status", [({}, 401), ({"X-SECRET-KEY": "nope"}, 403), ({"x-api-key": "nope"}, 403),
                                            ({"X-SECRET-KEY": "s3cret"}, 200), ({"x-api-key": "s3cret"}, 200),
                                            ({"Authorization": "Bearer s3cret"}, 200)])
def test_mount_keys(headers, status):
    got, body = request("/neuronpedia/explain", headers)
    assert got == status
    if status != 200:
        assert set(json.loads(body)) == {"detail"}


def test_root_rewrite_leaves_our_paths_alone():
    key = {"X-SECRET-KEY": "s3cret"}
    assert request("/", key, at_root=True) == (200, b"/neuronpedia/")
    assert request("/explain", key, at_root=True) == (200, b"/neuronpedia/explain")
    assert request("/healthz", at_root=True) == (200, b"/healthz")
    assert request("/static/app.js", at_root=True) == (200, b"/static/app.js")
    assert request("/v1/models", {"Authorization": "Bearer s3cret"}, at_root=True) == (200, b"/v1/models")
    assert request("/", at_root=False) == (200, b"/")  # the page stays at / unless asked
