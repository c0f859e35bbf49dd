"""A real S3-compatible server for the tests: SeaweedFS's ``weed mini`` (see SEAWEEDFS.md).

Started by :class:`images_service.dev.embedded_s3.EmbeddedS3`, the same code the dev stack uses
(explicit loopback ports with gRPC = HTTP + 10000, a short ``TMPDIR``, no ``AWS_*`` / ``S3_*``
in its environment, ready once a real PUT went through). This module adds what only tests
need: the test keys, identities files, and helpers to list and empty buckets.

Fixtures: ``seaweedfs`` (one server per session), ``s3_bucket`` (a fresh bucket per test,
removed after it), ``make_seaweedfs`` (private servers a test may stop, restart or start with
an identities file), ``aws_credentials`` (the standard AWS chain set to test keys).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from images_service.dev.embedded_s3 import EmbeddedS3

#: Keys the tests sign with; without an identities file weed accepts any key.
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-0123456789"


class SeaweedFS(EmbeddedS3):
    """One ``weed mini`` with a fixed data directory and fixed ports across restarts."""

    def __init__(self, base_dir: Path, identities: list[dict[str, Any]] | None = None) -> None:
        keys = (ACCESS_KEY, SECRET_KEY)
        if identities is not None:
            creds = identities[0]["credentials"][0]
            keys = (creds["accessKey"], creds["secretKey"])
        super().__init__(Path(base_dir) / "data", keys=keys, identities=identities)

    @property
    def admin_keys(self) -> tuple[str, str]:
        return self.keys

    def restart(self) -> SeaweedFS:
        self.stop()
        self.start()
        return self

    def create_bucket(self, name: str | None = None) -> str:
        return super().create_bucket(name or f"t-{uuid.uuid4().hex[:16]}")

    def all_keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (to assert that nothing but the layout is left)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def remove_bucket(self, bucket: str) -> None:
        client = self.client()
        for upload in self.pending_uploads(bucket):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
        for key in self.all_keys(bucket):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> Iterator[str]:
    """A new, empty bucket on the session's server; removed after the test."""
    bucket = seaweedfs.create_bucket()
    yield bucket
    try:
        seaweedfs.remove_bucket(bucket)
    except (ClientError, BotoCoreError):
        pass  # the test may have left the server unreachable: the data dir goes anyway


@pytest.fixture
def make_seaweedfs(tmp_path: Path) -> Iterator[Callable[..., SeaweedFS]]:
    """Private servers (``make_seaweedfs(identities=[...])``), closed after the test."""
    servers: list[SeaweedFS] = []

    def make(identities: list[dict[str, Any]] | None = None) -> SeaweedFS:
        server = SeaweedFS(tmp_path / f"weed-{len(servers)}", identities)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        # Measured: after a SIGKILL and restart with a cut 48 MiB upload, weed's volume server
        # may ignore SIGTERM for more than 15 s; these data directories are thrown away anyway.
        server.close(grace_s=5.0)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The standard AWS chain, reduced to the environment and set to the test keys."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    # No profile files and no instance metadata lookups (they would cost seconds).
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return ACCESS_KEY, SECRET_KEY


def identity(access_key: str, secret_key: str, name: str = "tester") -> dict[str, Any]:
    """One entry of an identities file (``-s3.config``) with every action allowed."""
    return {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
