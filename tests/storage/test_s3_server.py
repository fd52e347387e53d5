"""The S3 fixture works as the object-store backend will use it (docs/storage.md).

Written and read through s3fs, configured only by the environment; and the two
conditional writes the commit protocol rests on behave as on AWS: a create-only put
(`If-None-Match: *`) refuses an existing object, a put with `If-Match` refuses a stale
etag.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

s3fs = pytest.importorskip("s3fs", reason="install the test extra: pip install -e '.[test]'")
boto3 = pytest.importorskip("boto3")
botocore_exceptions = pytest.importorskip("botocore.exceptions")

if TYPE_CHECKING:
    from .conftest import S3Server


def _key() -> str:
    # Each test its own names: the server lives for the whole session.
    return f"runs/{uuid.uuid4().hex}"


def test_s3fs_writes_and_reads_objects_through_the_environment(s3: S3Server) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    path = f"{s3.buckets[0]}/{_key()}/ckpt-1.data-00000-of-00001"
    payload = bytes(range(256)) * 64
    fs.pipe_file(path, payload)
    assert fs.cat_file(path) == payload
    assert fs.cat_file(path, start=100, end=356) == payload[100:356]  # a ranged GET
    assert fs.info(path)["size"] == len(payload)
    assert fs.ls(path.rsplit("/", 1)[0], detail=False) == [path]


def test_a_create_only_put_refuses_an_existing_object(s3: S3Server) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    path = f"{s3.buckets[0]}/{_key()}/ckpt-1.index"
    fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"second", mode="create")
    assert fs.cat_file(path) == b"first"


def test_a_put_with_a_stale_etag_is_refused(s3: S3Server) -> None:
    client = boto3.client("s3")  # endpoint, region and credentials from the environment
    bucket, key = s3.buckets[0], f"{_key()}/checkpoint"
    client.put_object(Bucket=bucket, Key=key, Body=b"model_checkpoint_path: 'ckpt-1'\n")
    read_etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    client.put_object(Bucket=bucket, Key=key, Body=b"model_checkpoint_path: 'ckpt-2'\n")
    with pytest.raises(botocore_exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key=key, Body=b"lost update", IfMatch=read_etag)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read().endswith(b"'ckpt-2'\n")
