"""Storage options are decided in one place (nla/lake/storage.py): a folder has none; s3:// takes the AWS_*
environment and the safe-commit default, and explicit options win key by key."""

from __future__ import annotations

from nla.lake.storage import pyarrow_filesystem, storage_options
from nla.lake.store import Lake

ENV = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
       "AWS_SECRET_ACCESS_KEY": "s", "AWS_ALLOW_HTTP": "true"}


def test_local_root_has_no_options(tmp_path):
    assert storage_options(str(tmp_path), env=ENV) is None
    assert Lake(tmp_path).storage_options is None


def test_s3_options_from_env_safe_commits_and_explicit_override():
    o = storage_options("s3://b/p", {"AWS_REGION": "us-east-1"}, env=ENV)
    assert o == {"aws_conditional_put": "etag", "aws_endpoint_url": "http://127.0.0.1:5055", "aws_region": "us-east-1",
                 "aws_access_key_id": "k", "aws_secret_access_key": "s", "aws_allow_http": "true"}
    assert "aws_s3_allow_unsafe_rename" not in o


def test_an_http_endpoint_is_allowed_unless_the_options_say_otherwise():
    """deltalake refuses http:// endpoints unless allow_http is set (while Arrow's readers take them): the endpoint's
    own scheme is the user's choice, so it sets the default; an explicit value still wins."""
    bare = {k: v for k, v in ENV.items() if k != "AWS_ALLOW_HTTP"}
    assert storage_options("s3://b/p", env=bare)["aws_allow_http"] == "true"
    assert storage_options("s3://b/p", {"aws_allow_http": "false"}, env=bare)["aws_allow_http"] == "false"
    assert "aws_allow_http" not in storage_options("s3://b/p", env={**bare, "AWS_ENDPOINT_URL": "https://s3.x.io"})
    assert "aws_allow_http" not in storage_options("s3://b/p", env={})  # AWS itself


def test_arrow_filesystem_uses_the_same_options():
    fs = pyarrow_filesystem("s3://b/p/explanations", storage_options("s3://b/p", env=ENV))
    assert fs.base_path == "b/p/explanations/"
    assert fs.base_fs.region == "eu-west-1"
    assert pyarrow_filesystem("gs://b/p", {}) is None


def test_store_wait_and_what_counts_as_unreachable(monkeypatch):
    """How long writes wait for a restarting store ($NLA_STORE_WAIT_S, checked when the lake is opened), and which
    errors are a store that does not answer (retried) rather than a wrong setting (raised at once)."""
    import pytest

    from nla.errors import NLALakeError
    from nla.lake.storage import STORE_WAIT_S, store_wait_s, unreachable

    assert store_wait_s({}) == STORE_WAIT_S and store_wait_s({"NLA_STORE_WAIT_S": "6"}) == 6.0
    for bad in ("soon", "-1", "inf"):
        monkeypatch.setenv("NLA_STORE_WAIT_S", bad)
        with pytest.raises(NLALakeError, match=f"NLA_STORE_WAIT_S='{bad}': not a number of seconds >= 0. Fix: set"):
            Lake("s3://b/p")
    assert Lake("lake-folder").store_wait_s == 0.0  # a folder never waits: its errors are not outages
    refused = OSError("Generic S3 error: Error performing GET http://127.0.0.1:9/b/t/_delta_log/_last_checkpoint in "
                      "1.5s, after 10 retries, max_retries 10, retry_timeout 180s - HTTP error - error sending request "
                      "- client error (Connect) - tcp connect error - Connection refused (os error 111)")
    busy = OSError("Error performing PUT http://h/b/k in 3ms - Server returned non-2xx status code: 503 Service "
                   "Unavailable: <Error><Code>SlowDown</Code></Error>, after 10 retries, retry_timeout 180s")
    denied = OSError("Error performing PUT http://h/b/k in 3ms - Server returned non-2xx status code: 403 Forbidden: "
                     "<Error><Code>SignatureDoesNotMatch</Code></Error>, after 0 retries, retry_timeout 180s")
    assert unreachable(refused) and unreachable(busy) and not unreachable(denied)
