"""Checks of what a bucket holds after an S3 test: exactly the contract's layout (§5, §11).

Read with the test's own client (explicit keys), never through the service's storage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.seaweedfs import SeaweedFS

#: A key of the layout: metadata.json, an original image, or a derived one.
LAYOUT_KEY = re.compile(
    r"^[A-Za-z0-9_-]+/[A-Za-z_][A-Za-z0-9_]*/[^/.][^/]*/"
    r"(metadata\.json|original/img_\d{3,}\.(jpg|png|webp|gif|bmp|tif|avif)"
    r"|processed/[a-z0-9_-]+/img_\d{3,}\.[a-z]+)$"
)


def assert_only_layout(server: SeaweedFS, bucket: str) -> list[str]:
    """Every key is a layout key, every image is named by its metadata.json, and no
    multipart upload is pending; returns the keys."""
    keys = server.all_keys(bucket)
    assert [k for k in keys if not LAYOUT_KEY.match(k)] == [], keys
    assert server.pending_uploads(bucket) == []
    folders = {k.rsplit("/original/", 1)[0] for k in keys if "/original/" in k}
    for folder in folders:
        meta = read_json(server, bucket, f"{folder}/metadata.json")
        named = {f"{folder}/{r['file']}" for r in meta["images"] if r.get("file")}
        assert {k for k in keys if k.startswith(f"{folder}/original/")} == named
    return keys


def read_json(server: SeaweedFS, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def object_versions(server: SeaweedFS, bucket: str) -> dict[str, tuple[str, Any]]:
    """key -> (ETag, LastModified) of every object: a re-PUT changes LastModified."""
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: (item["ETag"], item["LastModified"])
            for page in pages for item in page.get("Contents", [])}


def unwritable_path(base: Path) -> Path:
    """A STORAGE_PATH nothing can be created under, even as root: below a regular file."""
    base.mkdir(parents=True, exist_ok=True)
    blocker = base / "not-a-directory"
    blocker.write_bytes(b"")
    return blocker / "images"
