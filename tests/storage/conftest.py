"""A real S3 API for the tests: moto's server on a free local port, started once a session.

The tests reach it as a user reaches S3: through the environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, ...), which the per-test fixture `s3` sets with monkeypatch, so every
test leaves the environment as it found it (tests/_hygiene.py). Buckets are made with
boto3 (`s3fs.mkdir` of a bucket fails on moto). Nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: The buckets made at the start of the session (S3 names: 3 to 63 characters).
BUCKETS = ("trackpoint-test", "trackpoint-other")

# Not real credentials: moto accepts any, and a user's own must never be used.
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_REGION = "us-east-1"


@dataclasses.dataclass(frozen=True, slots=True)
class S3Server:
    """The session's moto server.

    Attributes:
        endpoint: Its URL (`http://127.0.0.1:<port>`), what `AWS_ENDPOINT_URL` is set to.
        buckets: The buckets made at the start of the session.
    """

    endpoint: str
    buckets: tuple[str, ...]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 (a free port) with `BUCKETS`; stop it at the end."""
    pytest.importorskip("moto", reason="install the test extra: pip install -e '.[test]'")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=_REGION,
            aws_access_key_id=_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        for bucket in BUCKETS:
            client.create_bucket(Bucket=bucket)
        yield S3Server(endpoint=endpoint, buckets=BUCKETS)
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The moto server, reachable for this test through the environment, as a user sets it.

    The user's own AWS configuration (profiles, credential files, tokens) is hidden, so
    that no test can reach a real account.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", _REGION)
    for name, value in _CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return s3_server
