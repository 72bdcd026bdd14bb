"""The HTTP guard: bearer token, request-size limit, and one JSON error shape for every failure.

`Guard` is an ASGI middleware: bodies over the limit get 413 before any handler runs, and /v1/* needs
`Authorization: Bearer <NLA_API_TOKEN>` when a token is set (the page, /docs, /openapi.json and /healthz stay open).
The Neuronpedia mount (/neuronpedia/*, or every other path when it is served at the root) takes the same token in
the headers its clients send (X-SECRET-KEY, x-api-key, or the bearer) and answers in its shape: {"detail": ...},
401 when no key is sent, 403 when it is wrong.
Only the token's SHA-256 travels to the replica. `error_response` maps exceptions to status codes: bad input -> 4xx
with the message that names the input and the fix; only real server faults are 5xx. No routes here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from nla.errors import NLAConfigError, NLAError, NLAInputError, NLAQueryError, NLAStoreUnreachable, NLATableNotFound
from nla.serve.config import TOKEN_ENV

DRAIN_BYTES = 64 * 2**20  # an over-limit body up to this size is read and dropped before the 413
PROTECTED_PREFIXES = ("/v1/",)  # paths that need the token; the page, /docs and /healthz stay open
MOUNT = "/neuronpedia"  # where Neuronpedia's NLA API is answered (serve/neuronpedia/)
OWN_PATHS = ("/v1/", "/static/", "/docs", "/redoc", "/openapi.json", "/healthz", MOUNT)  # never rewritten to MOUNT
MOUNT_KEY_HEADERS = (b"x-secret-key", b"x-api-key")  # Neuronpedia's header, and the one some of its clients send


def token_digest(token: str | None = None) -> str | None:
    """SHA-256 hex of the API token ($NLA_API_TOKEN by default); None when no token is set."""
    token = os.environ.get(TOKEN_ENV) if token is None else token
    return hashlib.sha256(token.encode("utf-8")).hexdigest() if token else None


class ServiceUnavailable(NLAError):
    """A part of the service this request needs is not loaded (no base model, no AR): 404 with the fix."""


class RequestTooLarge(NLAInputError):
    """A request over a size/count limit of this server: 413."""


def _body(status: int, message: str, kind: str, *, mount: bool = False) -> tuple[int, bytes]:
    return status, json.dumps({"detail": message} if mount else {"error": message, "type": kind}).encode("utf-8")


def on_mount(path: str) -> bool:
    """Whether `path` (after the root rewrite) belongs to the Neuronpedia mount."""
    return path == MOUNT or path.startswith(MOUNT + "/")


def unwrap(e: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError and friends keep it as `cause`)."""
    seen = 0
    while getattr(e, "cause", None) is not None and seen < 8:
        e, seen = e.cause, seen + 1  # type: ignore[assignment]
    return e


STATUS = ((RequestTooLarge, 413), (ServiceUnavailable, 404), (NLATableNotFound, 404), (NLAQueryError, 400),
          (NLAStoreUnreachable, 503), (NLAInputError, 400), (NLAConfigError, 400), (NLAError, 400))


def error_status(e: BaseException) -> tuple[int, str, str]:
    """(status, message, type) for an exception raised while answering a request."""
    e = unwrap(e)
    for cls, status in STATUS:
        if isinstance(e, cls):
            return status, str(e), type(e).__name__
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return 500, f"internal error ({type(e).__name__}: {msg[:300]}). This is a server fault, not your input.", "Internal"


async def _send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: token check on /v1/*, then the body read up to max_body_bytes (413 past it)."""

    def __init__(self, app: Any, *, settings: Any) -> None:
        # settings(): (token_digest | None, max_body_bytes, mount_at_root), read per request
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        digest, max_bytes, at_root = self.settings()
        if at_root and not scope["path"].startswith(OWN_PATHS):  # Neuronpedia's API at the root: /explain, / ...
            raw = scope.get("raw_path") or scope["path"].encode()
            scope = {**scope, "path": MOUNT + scope["path"], "raw_path": MOUNT.encode() + raw}
        mount = on_mount(scope["path"])
        if digest and mount and (refused := self._mount_refusal(scope, digest)):
            return await _send_json(send, *refused)
        if digest and scope["path"].startswith(PROTECTED_PREFIXES) and not self._authorized(scope, digest):
            status, body = _body(401, f"missing or wrong bearer token. Fix: send 'Authorization: Bearer <token>' "
                                      f"with the token the server was started with (${TOKEN_ENV}).", "Unauthorized")
            return await _send_json(send, status, body, [(b"www-authenticate", b"Bearer")])
        declared, drain = dict(scope["headers"]).get(b"content-length", b""), max(DRAIN_BYTES, max_bytes)
        if declared.isdigit() and int(declared) > drain:  # too big to even read: answer and drop the connection
            return await _send_json(send, *self._too_large(int(declared), max_bytes, mount))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size <= max_bytes:
                chunks.append(message.get("body", b""))
            elif size > drain:
                break
            more = message.get("more_body", False)
        if size > max_bytes:  # read to the end first (up to `drain`), so the client gets the 413, not a reset
            return await _send_json(send, *self._too_large(size, max_bytes, mount))
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _authorized(scope: dict, digest: str) -> bool:
        return _matches(Guard._bearer(scope), digest)

    @staticmethod
    def _bearer(scope: dict) -> str:
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    @staticmethod
    def _mount_refusal(scope: dict, digest: str) -> tuple[int, bytes] | None:
        """None when one of the mount's key headers (or the bearer) carries the token; else their 401 / 403."""
        headers = dict(scope["headers"])
        keys = [headers[h].decode("latin-1").strip() for h in MOUNT_KEY_HEADERS if h in headers]
        keys += [b] if (b := Guard._bearer(scope)) else []
        if not keys:
            return _body(401, f"X-SECRET-KEY header required. Fix: send 'X-SECRET-KEY: <token>' (or x-api-key, or "
                              f"'Authorization: Bearer <token>') with the server's ${TOKEN_ENV}.", "", mount=True)
        if not any(_matches(k, digest) for k in keys):
            return _body(403, f"Invalid secret key. Fix: send the token the server was started with (${TOKEN_ENV}).",
                         "", mount=True)
        return None

    @staticmethod
    def _too_large(size: int, max_bytes: int, mount: bool = False) -> tuple[int, bytes]:
        base64 = "" if mount else ", or base64 vectors (about a third of the size of float lists)"
        return _body(413, f"request body of {size} bytes is over this server's limit of {max_bytes}. Fix: send fewer "
                          f"vectors per request{base64}.", "RequestTooLarge", mount=mount)


def _matches(token: str, digest: str) -> bool:
    return bool(token) and hmac.compare_digest(hashlib.sha256(token.encode("utf-8")).hexdigest(), digest)
