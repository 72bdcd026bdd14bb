"""Where the lake's bytes live and how to reach them: the one function that turns a lake root (a folder, or
s3://bucket/prefix) plus the environment into storage options, and the same options as a pyarrow filesystem, so
deltalake, the pyarrow datasets DuckDB reads, Ray Data readers and the server all reach the store the same way.
Also the cheap write probe a job runs before any model loads, and reading single objects (corpus shards on the
store). Not the tables (store.py), queries (query.py) nor corpus formats (nla/labeling/corpus.py).

Object-store settings come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP) or an explicit `storage_options` block, which wins key by key.
Concurrent Delta commits on S3 are made safe by conditional writes (`aws_conditional_put=etag`: If-None-Match on the
commit file), the default here; an unsafe rename is never turned on by us.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from nla.errors import NLALakeError, NLAStoreUnreachable

# environment variable -> deltalake (object_store) storage option
S3_ENV = {"AWS_ENDPOINT_URL": "aws_endpoint_url", "AWS_REGION": "aws_region", "AWS_ACCESS_KEY_ID": "aws_access_key_id",
          "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key", "AWS_SESSION_TOKEN": "aws_session_token",
          "AWS_ALLOW_HTTP": "aws_allow_http"}
S3_SAFE_COMMITS = {"aws_conditional_put": "etag"}  # atomic put-if-absent of each _delta_log entry
READ_BUFFER = 4 * 2**20  # bytes fetched per request when an object is streamed (corpus shards)
STORE_WAIT_S = 120.0  # how long a write waits for an unreachable store (a restart) before failing; NLA_STORE_WAIT_S
# overrides it


def scheme(root: str) -> str:
    """'' for a local folder, else the URI scheme ('s3', 'gs', 'abfs', ...)."""
    return urlparse(root).scheme if "://" in root else ""


def storage_options(root: str, explicit: Mapping[str, str] | None = None,
                    env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The storage options for lake `root`: None for a folder; for s3:// the AWS environment, the safe-commit default,
    then `explicit` on top (keys are lower-cased, as deltalake expects)."""
    env = os.environ if env is None else env
    kind = scheme(root)
    if kind == "":
        return None
    options: dict[str, str] = {}
    if kind in ("s3", "s3a"):
        options.update(S3_SAFE_COMMITS)
        options.update({opt: env[var] for var, opt in S3_ENV.items() if env.get(var)})
    options.update({k.lower(): str(v) for k, v in (explicit or {}).items()})
    if endpoint_of(options).lower().startswith("http://"):
        # an http:// endpoint (MinIO, a local store) is the user's choice: Arrow's readers take it as written, and
        # deltalake would refuse it ("URL scheme is not allowed") unless told; an explicit allow_http still wins
        options.setdefault("aws_allow_http", "true")
    return options or None


def endpoint_of(options: Mapping[str, str]) -> str:
    """The store's endpoint URL in storage options, under any of the spellings deltalake reads ('' for AWS)."""
    return options.get("aws_endpoint_url") or options.get("endpoint_url") or options.get("aws_endpoint") or ""


def is_s3(uri: str) -> bool:
    return scheme(uri) in ("s3", "s3a")


def object_path(uri: str) -> str:
    """'bucket/key' of an s3:// URI: the path Arrow's S3 filesystem takes."""
    parsed = urlparse(uri)
    return f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")


@functools.lru_cache(maxsize=8)
def _s3(options: frozenset) -> Any:
    import pyarrow.fs as pafs

    o = dict(options)
    endpoint = endpoint_of(o)
    kwargs: dict[str, Any] = {"region": o.get("aws_region") or o.get("region") or None,
                              "access_key": o.get("aws_access_key_id"), "secret_key": o.get("aws_secret_access_key"),
                              "session_token": o.get("aws_session_token")}
    if endpoint:
        ep = urlparse(endpoint)
        kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def s3_filesystem(options: Mapping[str, str] | None) -> Any:
    """Arrow's S3 filesystem reached with `options` (paths are 'bucket/key'); one per distinct options."""
    return _s3(frozenset((options or {}).items()))


def pyarrow_filesystem(uri: str, options: Mapping[str, str] | None) -> Any:
    """A pyarrow filesystem rooted at `uri` (a table folder), reached with `options`; None where Arrow has no
    native filesystem for the scheme (the caller then reads through deltalake's)."""
    import pyarrow.fs as pafs

    if not is_s3(uri):
        return None
    return pafs.SubTreeFileSystem(object_path(uri), s3_filesystem(options))


def open_input(uri: str, options: Mapping[str, str] | None, *, random_access: bool = False) -> Any:
    """A binary file to read the object or local file at `uri`: buffered and streamed (lines, chunks), or with
    random access (parquet footers, Arrow IPC). An OSError says what is wrong (reason() turns it into words)."""
    if not is_s3(uri):
        path = uri.removeprefix("file://")
        return open(path, "rb")
    fs = s3_filesystem(options)
    if random_access:
        return fs.open_input_file(object_path(uri))
    return io.BufferedReader(fs.open_input_stream(object_path(uri)), READ_BUFFER)


def probe_writable(root: str, options: Mapping[str, str] | None) -> None:
    """Write and delete one tiny object under an object-store `root`; any failure (missing bucket, wrong credentials,
    unreachable endpoint) becomes one NLALakeError naming the lake and the fix."""
    fs = pyarrow_filesystem(root, options)
    if fs is None:
        return  # gs:// and abfs:// are not probed: their first commit reports what is wrong
    name = f".nla-write-probe-{os.getpid()}"
    try:
        with fs.open_output_stream(name) as f:
            f.write(b"")
        fs.delete_file(name)
    except OSError as e:
        raise NLALakeError(f"lake {root}: cannot write there ({reason(e)}). Fix: check the bucket exists and that "
                           "AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the lake's "
                           "storage_options) point at a store these credentials can write to.") from e


def store_wait_s(env: Mapping[str, str] | None = None) -> float:
    """Seconds a lake write keeps retrying while its store is unreachable: $NLA_STORE_WAIT_S, else STORE_WAIT_S."""
    value = (os.environ if env is None else env).get("NLA_STORE_WAIT_S")
    try:
        seconds = float(value) if value else STORE_WAIT_S
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise NLALakeError(f"NLA_STORE_WAIT_S={value!r}: not a number of seconds >= 0. Fix: set it to e.g. 120, or "
                           "unset it.")
    return seconds


def read_error(root: str, e: Exception) -> NLALakeError:
    """A lake on an object store that could not be read, as one error naming the lake, the cause and the fix (reads
    do not wait for a store to come back, as writes do: a query or a page answers now)."""
    why = reason(e)
    if unreachable(e):
        return NLAStoreUnreachable(f"lake {root}: the store does not answer ({why}). Fix: check that the store "
                                   "(AWS_ENDPOINT_URL) is up and reachable from here, then run the command again.")
    return NLALakeError(f"lake {root}: cannot read there ({why}). Fix: check the bucket exists and that "
                        "AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the lake's "
                        "storage_options) point at a store these credentials can read.")


def unreachable(e: Exception) -> bool:
    """True for a store that did not answer or answered 'try again' (refused or cut connections, timeouts, 5xx):
    what a restarting server does. Bad credentials, a missing bucket or a conflict are not."""
    text = " ".join(str(e).split()).lower()
    return reason(e) == "endpoint unreachable" or any(s in text for s in (
        "service unavailable", "slowdown", "slow down", "internalerror", "internal server error", "timed out",
        "broken pipe", "connection reset", "connection closed"))


def reason(e: Exception) -> str:
    """The cause in a few words, from the S3 error code (Arrow spells them SIGNATURE_DOES_NOT_MATCH, others
    SignatureDoesNotMatch), else the error's first 200 characters."""
    text = " ".join(str(e).split())
    squashed = text.lower().replace("_", "")
    for needle, why in (("signaturedoesnotmatch", "wrong secret key"), ("invalidaccesskeyid", "unknown access key"),
                        ("accessdenied", "access denied"), ("nosuchbucket", "no such bucket"),
                        ("bucket does not exist", "no such bucket"), ("couldn't connect", "endpoint unreachable"),
                        ("curlcode", "endpoint unreachable"), ("error sending request", "endpoint unreachable"),
                        ("connect", "endpoint unreachable")):
        if needle in squashed:
            return why
    return text[:200]
