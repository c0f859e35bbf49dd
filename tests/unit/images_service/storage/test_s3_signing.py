"""Uploads to S3 are signed with UNSIGNED-PAYLOAD over plain HTTP too (issue 24: botocore
otherwise hashes every body into the SigV4 signature, in Python, when the endpoint is http)."""

from __future__ import annotations

import botocore.awsrequest

from images_service.storage.s3 import S3Storage


def test_a_put_over_plain_http_does_not_hash_its_body_into_the_signature(tmp_path,
                                                                         monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    storage = S3Storage("bucket", endpoint_url="http://127.0.0.1:9", temp_root=tmp_path)
    sent: list[botocore.awsrequest.AWSPreparedRequest] = []

    class _Raw:
        def stream(self):
            return iter([b""])

    def capture(request, **kwargs):  # answers instead of the network
        sent.append(request)
        return botocore.awsrequest.AWSResponse(request.url, 200, {}, _Raw())

    storage._client.meta.events.register("before-send.s3.PutObject", capture)
    body = tmp_path / "img.png"
    body.write_bytes(b"\x89PNG" + b"x" * 1000)

    storage.put_file("db/c/d/original/img_001.png", body, content_type="image/png",
                     sha256="0" * 64)

    (request,) = sent
    assert request.headers["X-Amz-Content-SHA256"] == b"UNSIGNED-PAYLOAD"
    assert b"Signature=" in request.headers["Authorization"]  # the request is still signed
