"""The synchronous engine on a real SeaweedFS bucket: what each step asks of the store (§11).

The service's own S3 client is observed through botocore's event hooks (every operation it
sends is counted), nothing is mocked.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from images_service.download import engine
from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher
from images_service.storage.s3 import S3Storage
from tests.support.engine import make_settings
from tests.support.image_server import ImageServer
from tests.support.s3_layout import assert_only_layout, unwritable_path
from tests.support.seaweedfs import SeaweedFS

pytestmark = pytest.mark.usefixtures("aws_credentials")


@pytest.fixture
def s3_storage(seaweedfs: SeaweedFS, s3_bucket: str, tmp_path: Path):
    storage = S3Storage(s3_bucket, endpoint_url=seaweedfs.endpoint_url,
                        temp_root=tmp_path / "tmp")
    yield storage
    storage.close()


def count_operations(storage: S3Storage) -> Counter:
    calls: Counter = Counter()
    storage._client.meta.events.register(  # the service's own client, observed
        "before-call.s3", lambda model, **_: calls.update([model.name]))
    return calls


def test_a_rerun_asks_one_head_per_image_and_uploads_no_image(
        s3_storage, seaweedfs, s3_bucket, image_server: ImageServer, tmp_path) -> None:
    settings = make_settings(tmp_path, STORAGE_PATH=str(unwritable_path(tmp_path / "local")))
    doc = {"_id": 7, "name": "Doc", "images": [image_server.url(f"/image/{f}/{f}")
                                                for f in ("JPEG", "PNG", "WEBP")]}
    with Fetcher(settings) as fetcher:
        first = engine.download_document(doc, "db", "coll", settings, job_id="j1",
                                         storage=s3_storage, fetcher=fetcher)
        image_server.reset()
        calls = count_operations(s3_storage)
        second = engine.download_document(doc, "db", "coll", settings, job_id="j2",
                                          storage=s3_storage, fetcher=fetcher)

    assert [r["status"] for r in first["images"]] == ["downloaded"] * 3
    assert [r["status"] for r in second["images"]] == ["skipped"] * 3
    assert image_server.hits() == 0
    # metadata.json read once (the claim; the merge starts from the claim's own write) and
    # written twice (the claim records the new job's plan so that no older message can change
    # the folder meanwhile, §14; the merge records the run); each image one HEAD; no image
    # uploaded.
    assert calls == Counter({"GetObject": 1, "HeadObject": 3, "ListObjectsV2": 1,
                             "PutObject": 2})
    assert len(assert_only_layout(seaweedfs, s3_bucket)) == 4


def test_concurrent_writers_of_one_process_never_lose_an_entry(s3_storage, tmp_path) -> None:
    settings = make_settings(tmp_path)
    plan = engine.plan_document({"_id": "c", "images": [f"https://cdn.test/{i}.jpg"
                                                        for i in range(16)]},
                                "db", "coll", settings)
    failure = DownloadError("http_500", "x", http_status=500)

    def writer(tasks):
        for task in tasks:
            engine.DocumentFolder(s3_storage, plan, job_id="j").merge(
                [engine.failed_record(task, failure, 1)])

    threads = [threading.Thread(target=writer, args=(plan.images[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    meta = engine.DocumentFolder(s3_storage, plan, job_id="j").read()
    assert [r["index"] for r in meta["images"]] == list(range(1, 17))


def test_a_store_going_away_during_the_upload_loses_nothing_stored(
        make_seaweedfs, image_server: ImageServer, tmp_path) -> None:
    server = make_seaweedfs()
    bucket = server.create_bucket()
    settings = make_settings(tmp_path)
    storage = S3Storage(bucket, endpoint_url=server.endpoint_url, temp_root=tmp_path / "tmp",
                        max_attempts=1, connect_timeout_s=1)
    plan = engine.plan_document({"_id": 1, "images": [image_server.url("/image/JPEG/1"),
                                                      image_server.url("/image/PNG/2")]},
                                "db", "coll", settings)
    with Fetcher(settings) as fetcher:
        folder = engine.DocumentFolder(storage, plan, job_id="j")
        kept = engine.download_image(folder, plan.images[0], fetcher, settings)
        folder.merge([kept])
        server.stop()
        with pytest.raises(DownloadError) as info:
            engine.download_image(folder, plan.images[1], fetcher, settings)
        server.start()
    storage.close()
    assert info.value.code == "connection_error" and info.value.retryable
    assert f"s3 bucket {bucket!r}" in info.value.message
    assert list((tmp_path / "tmp").iterdir()) == []  # the body was discarded
    assert assert_only_layout(server, bucket) == ["db/coll/1/metadata.json",
                                                  "db/coll/1/original/img_001.jpg"]
