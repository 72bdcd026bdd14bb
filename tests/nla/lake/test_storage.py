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


def test_arrow_filesystem_uses_the_same_options():
    fs = pyarrow_filesystem("s3://b/p/explanations", storage_options("s3://b/p", env=ENV))
    assert fs.base_path == "b/p/explanations/"
    assert fs.base_fs.region == "eu-west-1"
    assert pyarrow_filesystem("gs://b/p", {}) is None
