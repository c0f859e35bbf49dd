"""The S3 pipeline across hosts and through faults (contract §10, §11), on a real SeaweedFS.

Two worker "hosts" (own working directory, own unwritable ``STORAGE_PATH``) share one job
through the bucket; the store stopped mid-job; a missing bucket and refused credentials; a
worker SIGKILLed while its upload hangs. After each: exactly the layout in the bucket, no
pending multipart upload, nothing written to a local tree.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import replace

import pytest

from tests.support.pipeline import WorkerProcess, api_client, source_db, wait_job
from tests.support.s3_layout import assert_only_layout, read_json, unwritable_path
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, identity

pytestmark = pytest.mark.usefixtures("aws_credentials")


@pytest.fixture
def workers(tmp_path, start_worker):
    """Start workers as separate "hosts": each with its own working directory."""

    def start(settings, host: str, threads: int = 4) -> WorkerProcess:
        home = tmp_path / host
        home.mkdir(exist_ok=True)
        # The log's folder is the worker's working directory: the host's own.
        return start_worker(replace(settings, storage_path=unwritable_path(home)),
                            threads=threads, name=f"{host}/worker")

    return start


def settings_for(make_settings, server, bucket, **env):
    return make_settings({
        "ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "200",
        "RETRY_BACKOFF_MAX_MS": "2000", "MAX_RETRIES": "8", "API_RATE_LIMIT": "100000/minute",
        "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": server.endpoint_url,
        **env,
    })


def insert_docs(settings, count, per_doc, delay_s=0.1):
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many([
        {"_id": f"d{i:02d}", "name": f"n{i}",
         "images": [f"/image/JPEG/{i}-{k}?delay={delay_s}" for k in range(per_doc)]}
        for i in range(count)])


def with_urls(settings, image_server, hosts=("127.0.0.1",)):
    """Point every image path at the loopback server, spread over ``hosts``."""
    hotels = source_db(settings).hotels
    for n, doc in enumerate(hotels.find()):
        host = hosts[n % len(hosts)]
        hotels.update_one({"_id": doc["_id"]}, {"$set": {
            "images": [image_server.url(path, host=host) for path in doc["images"]]}})


def downloads_of(worker: WorkerProcess) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics",
                                  timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('images_downloads_total{result="downloaded"}'))


def assert_all_downloaded(server, bucket, count, per_doc):
    keys = assert_only_layout(server, bucket)
    assert len([k for k in keys if "/original/" in k]) == count * per_doc
    for i in range(count):
        meta = read_json(server, bucket, f"serpy_db/hotels/d{i:02d}-n{i}/metadata.json")
        assert meta["summary"]["downloaded"] + meta["summary"]["skipped"] == per_doc, meta


def test_two_worker_hosts_share_one_job_through_the_bucket(
        make_settings, workers, image_server, seaweedfs, s3_bucket, tmp_path):
    settings = settings_for(make_settings, seaweedfs, s3_bucket, MAX_CONCURRENT_PER_DOMAIN="2")
    insert_docs(settings, 48, 2, delay_s=0.15)  # 6 messages of 8 documents
    with_urls(settings, image_server, hosts=("127.0.0.1", "localhost"))
    # One Dramatiq thread each: a worker prefetches 2 messages, so neither can take them all
    # (each message's downloads still run concurrently on the worker's download pool).
    first = workers(settings, "host-a", threads=1)
    second = workers(settings, "host-b", threads=1)
    client = api_client(settings)

    job = wait_job(client, client.post(
        "/api/v1/download/collection/serpy_db/hotels").json["job_id"], timeout_s=120)

    assert job["status"] == "completed" and job["progress"]["images_downloaded"] == 96
    assert_all_downloaded(seaweedfs, s3_bucket, 48, 2)
    # Both hosts worked, and the per-host cap held across them.
    assert downloads_of(first) > 0 and downloads_of(second) > 0
    assert downloads_of(first) + downloads_of(second) == 96
    assert max(image_server.max_concurrency().values()) <= 2
    # Nothing but each worker's log in its working directory; the local trees never existed.
    for host in ("host-a", "host-b"):
        names = sorted(p.name for p in (tmp_path / host).iterdir())
        assert names == ["not-a-directory", names[1]] and names[1].endswith(".log")
        assert (tmp_path / host / "not-a-directory").stat().st_size == 0


def test_a_storage_outage_mid_job_loses_and_duplicates_nothing(
        make_settings, workers, make_seaweedfs, image_server):
    server = make_seaweedfs()
    bucket = server.create_bucket()
    # The outage (stop ~2 s, 10 s down, start ~2 s; longer on a loaded machine) within the
    # retry budget of a message (Dramatiq's Retries) and of an image (retry_image): about
    # 70 s of backoff each.
    settings = settings_for(make_settings, server, bucket, MAX_RETRIES="20",
                            RETRY_BACKOFF_MAX_MS="4000")
    insert_docs(settings, 20, 3)
    with_urls(settings, image_server)
    # One image above the multipart threshold (8 MiB), so an upload may be cut by the stop.
    source_db(settings).hotels.update_one({"_id": "d19"}, {"$push": {
        "images": image_server.url("/image/BMP/big?w=2000&h=1500")}})
    workers(settings, "host-a", threads=4)
    client = api_client(settings)
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    wait_job(client, job_id, until=lambda j: j["progress"]["documents_done"] >= 3)

    server.stop()  # SIGTERM: requests are refused for ~10 s
    time.sleep(10)
    server.start()
    back = time.monotonic()
    job = wait_job(client, job_id, timeout_s=120)
    recovery_s = time.monotonic() - back

    assert job["status"] == "completed", job
    assert job["progress"]["images_failed"] == 0
    assert job["progress"]["images_downloaded"] + job["progress"]["images_skipped"] == 61
    keys = assert_only_layout(server, bucket)
    assert len([k for k in keys if "/original/" in k]) == 61
    print(f"job completed {recovery_s:.1f} s after the store came back")


@pytest.mark.parametrize("fault", ["missing bucket", "refused credentials"])
def test_a_store_that_refuses_every_request_fails_the_job_naming_the_bucket(
        make_settings, workers, make_seaweedfs, image_server, monkeypatch, fault):
    server = make_seaweedfs(identities=[identity(ACCESS_KEY, SECRET_KEY)])
    bucket = server.create_bucket()
    if fault == "missing bucket":
        bucket = "no-such-bucket"
    else:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    settings = settings_for(make_settings, server, bucket, MAX_RETRIES="2",
                            RETRY_BACKOFF_MIN_MS="100", RETRY_BACKOFF_MAX_MS="300")
    insert_docs(settings, 2, 2, delay_s=0)
    with_urls(settings, image_server)
    workers(settings, "host-a")
    client = api_client(settings)
    started = time.monotonic()

    job = wait_job(client, client.post(
        "/api/v1/download/collection/serpy_db/hotels").json["job_id"], timeout_s=60)

    assert job["status"] == "failed"
    assert f"s3 bucket {bucket!r}" in job["message"]
    reason = "the bucket does not exist" if fault == "missing bucket" else "access refused"
    assert reason in job["message"] and "wrong-secret" not in job["message"]
    assert image_server.hits() == 0  # nothing was fetched that could not be stored
    print(f"{fault}: job failed after {time.monotonic() - started:.1f} s")


def test_a_worker_killed_during_an_upload_leaves_no_partial_object(
        make_settings, workers, make_seaweedfs, image_server):
    server = make_seaweedfs()
    bucket = server.create_bucket()
    settings = settings_for(make_settings, server, bucket)
    db = source_db(settings)
    db.hotels.drop()
    # 9 MB (a multipart upload), served after 1 s: time to hang the store before the upload.
    big = image_server.url("/image/BMP/big?w=2000&h=1500&delay=1")
    db.hotels.insert_one({"_id": "d00", "name": "n0", "images": [big]})
    first = workers(settings, "host-a")
    client = api_client(settings)
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    deadline = time.monotonic() + 30
    while not image_server.hits("/image/BMP/big"):
        assert time.monotonic() < deadline, "the image was never requested"
        time.sleep(0.01)
    server.pause()  # SIGSTOP: the upload that follows the download hangs ...
    time.sleep(3)
    first.kill()  # ... and the worker dies in the middle of it
    server.resume()
    assert [k for k in server.all_keys(bucket) if "/original/" in k] == []

    workers(settings, "host-b")  # takes the message over (heartbeat timeout ~20 s)
    job = wait_job(client, job_id, timeout_s=120)

    assert job["status"] == "completed" and job["progress"]["images_downloaded"] == 1
    assert image_server.hits("/image/BMP/big") == 2
    # Whatever the store kept of the cut upload was aborted by the next upload of the key.
    assert assert_only_layout(server, bucket) == [
        "serpy_db/hotels/d00-n0/metadata.json", "serpy_db/hotels/d00-n0/original/img_001.bmp"]
