"""``GET /health``'s storage check (contract §11): the path is writable / the bucket answers."""

from __future__ import annotations

import time

import pytest

from api import create_app
from images_service.dev.embedded import listens


def test_filesystem_default_is_checked_and_ok(make_settings, tmp_path) -> None:
    settings = make_settings()
    assert settings.storage_backend == "filesystem"
    response = create_app(settings).test_client().get("/api/v1/health")
    assert response.status_code == 200
    assert response.json["checks"]["storage"] == "ok"
    assert settings.storage_path.is_dir()  # the probe created the root and left nothing in it
    assert list(settings.storage_path.iterdir()) == []


def test_unwritable_storage_path_is_503_naming_it(make_settings, tmp_path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")  # a file where the tree's root should be
    response = create_app(make_settings({"STORAGE_PATH": str(blocker)})).test_client().get(
        "/api/v1/health")
    assert response.status_code == 503 and response.json["status"] == "degraded"
    assert response.json["checks"]["storage"].startswith(f"error: STORAGE_PATH {str(blocker)!r}")
    assert response.json["checks"]["mongodb"] == "ok" and response.json["checks"]["redis"] == "ok"


@pytest.mark.usefixtures("aws_credentials")
def test_s3_bucket_ok(make_settings, seaweedfs, s3_bucket) -> None:
    settings = make_settings({"STORAGE_BACKEND": "s3", "S3_BUCKET": s3_bucket,
                              "S3_ENDPOINT_URL": seaweedfs.endpoint_url})
    response = create_app(settings).test_client().get("/api/v1/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok",
                             "checks": {"mongodb": "ok", "redis": "ok", "storage": "ok"}}


@pytest.mark.usefixtures("aws_credentials")
def test_missing_bucket_is_503_naming_the_bucket(make_settings, seaweedfs) -> None:
    settings = make_settings({"STORAGE_BACKEND": "s3", "S3_BUCKET": "no-such-bucket-1717",
                              "S3_ENDPOINT_URL": seaweedfs.endpoint_url})
    started = time.monotonic()
    response = create_app(settings).test_client().get("/api/v1/health")
    assert time.monotonic() - started < 5
    assert response.status_code == 503 and response.json["status"] == "degraded"
    assert response.json["checks"]["storage"] == (
        "error: s3 bucket 'no-such-bucket-1717': head bucket: the bucket does not exist")


@pytest.mark.usefixtures("aws_credentials")
def test_unreachable_store_answers_within_five_seconds(make_settings, make_seaweedfs) -> None:
    server = make_seaweedfs()
    bucket = server.create_bucket()
    settings = make_settings({"STORAGE_BACKEND": "s3", "S3_BUCKET": bucket,
                              "S3_ENDPOINT_URL": server.endpoint_url})
    from api.health import EXTENSION_KEY

    app = create_app(settings)
    client = app.test_client()
    assert client.get("/api/v1/health").status_code == 200
    # (the server on the endpoint is the one paused below, not another test's)
    assert listens(server.process.process.pid, server.ports["s3"])
    server.pause()  # accepts connections, never answers (returns once it is stopped)
    app.extensions[EXTENSION_KEY].expire()  # not the cached result: a probe of the outage
    started = time.monotonic()
    response = client.get("/api/v1/health")
    elapsed_s = time.monotonic() - started
    # One attempt with a 1.5 s read timeout: a retry would double it.
    assert elapsed_s < 2.5
    assert response.status_code == 503, (elapsed_s, response.json)
    assert response.json["checks"]["storage"].startswith(f"error: s3 bucket {bucket!r}")
