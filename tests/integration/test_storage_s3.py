"""S3Storage against a real SeaweedFS: object metadata, multipart uploads, resumable folder
moves, outages, missing buckets and refused credentials (contract §11)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from images_service.errors import StorageUnavailable
from images_service.storage.s3 import S3Storage
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, identity

FOLDER = "serpy_db/hotels/42-hotel-ritz"
IMAGE = f"{FOLDER}/original/img_001.jpg"
META = f"{FOLDER}/metadata.json"
MIB = 1024 * 1024

pytestmark = pytest.mark.usefixtures("aws_credentials")


def make_storage(server: SeaweedFS, bucket: str, tmp_path: Path, **options: object) -> S3Storage:
    return S3Storage(bucket, endpoint_url=server.endpoint_url, temp_root=tmp_path / "tmp",
                     **options)  # type: ignore[arg-type]


def private_store(make_seaweedfs, tmp_path: Path, **options: object):
    """A server of the test's own (it may stop it), a bucket, and a storage with short
    timeouts so that an outage is noticed in seconds."""
    server = make_seaweedfs()
    bucket = server.create_bucket()
    options = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "max_attempts": 2, **options}
    return server, bucket, make_storage(server, bucket, tmp_path, **options)


def put_image(storage: S3Storage, key: str, data: bytes) -> str:
    local = storage.local_temp_dir(FOLDER) / ".tmp-body.part"
    local.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    storage.put_file(key, local, content_type="image/jpeg", sha256=sha256)
    return sha256


def test_objects_carry_content_type_and_sha256(seaweedfs, s3_bucket, tmp_path) -> None:
    storage = make_storage(seaweedfs, s3_bucket, tmp_path)
    sha256 = put_image(storage, IMAGE, b"\xff\xd8 jpeg \xff\xd9")
    storage.put_bytes(META, b"{}")
    client = seaweedfs.client()
    head = client.head_object(Bucket=s3_bucket, Key=IMAGE)
    assert head["ContentType"] == "image/jpeg" and head["Metadata"] == {"sha256": sha256}
    assert client.head_object(Bucket=s3_bucket, Key=META)["ContentType"] == "application/json"
    assert seaweedfs.all_keys(s3_bucket) == [META, IMAGE]


def test_a_file_above_the_threshold_goes_up_in_parts(seaweedfs, s3_bucket, tmp_path) -> None:
    storage = make_storage(seaweedfs, s3_bucket, tmp_path, multipart_threshold_bytes=1 * MIB)
    data = os.urandom(6 * MIB)  # parts are at least 5 MiB: two parts
    sha256 = put_image(storage, IMAGE, data)
    head = seaweedfs.client().head_object(Bucket=s3_bucket, Key=IMAGE)
    assert head["ETag"].strip('"').endswith("-2")  # the ETag of a two-part upload
    assert head["ContentType"] == "image/jpeg"
    assert storage.stat(IMAGE).sha256 == sha256 and storage.read_bytes(IMAGE) == data
    assert seaweedfs.pending_uploads(s3_bucket) == []
    assert seaweedfs.all_keys(s3_bucket) == [IMAGE]


def test_an_upload_left_by_a_killed_writer_is_aborted_by_the_next_one(
    seaweedfs, s3_bucket, tmp_path
) -> None:
    # Given a worker killed mid-upload of img_001 and of img_002 (parts sent, never completed)
    client, other = seaweedfs.client(), f"{FOLDER}/original/img_002.jpg"
    for key in (IMAGE, other):
        upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)
        client.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"],
                           PartNumber=1, Body=b"partial")
    time.sleep(1.1)  # the server records Initiated in whole seconds
    # When img_001 is downloaded again and stored in parts
    storage = make_storage(seaweedfs, s3_bucket, tmp_path, multipart_threshold_bytes=1 * MIB)
    data = os.urandom(2 * MIB)
    put_image(storage, IMAGE, data)
    # Then its stale upload is gone, img_002's waits for the sweep
    assert [u["Key"] for u in seaweedfs.pending_uploads(s3_bucket)] == [other]
    assert storage.sweep_leftovers(FOLDER, older_than_s=0) == 1
    assert seaweedfs.pending_uploads(s3_bucket) == []
    assert seaweedfs.all_keys(s3_bucket) == [IMAGE] and storage.read_bytes(IMAGE) == data


def test_a_multipart_upload_cut_by_an_outage_is_retried_and_leaves_nothing(
    make_seaweedfs, tmp_path
) -> None:
    server, bucket, storage = private_store(make_seaweedfs, tmp_path,
                                            multipart_threshold_bytes=5 * MIB)
    data = os.urandom(48 * MIB)
    local = storage.local_temp_dir(FOLDER) / ".tmp-big.part"
    local.write_bytes(data)
    outcome: list[BaseException | None] = []

    def upload() -> None:
        try:
            storage.put_file(IMAGE, local, content_type="image/jpeg", sha256="0" * 64)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    # Given an upload in parts under way when the store hangs, then dies
    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.pending_uploads(bucket) and time.monotonic() < deadline:
        time.sleep(0.01)
    server.pause()
    started = time.monotonic()
    thread.join(60)
    # Then the upload fails as a retryable connection error, within bounded time
    assert outcome and isinstance(outcome[0], StorageUnavailable), outcome
    assert outcome[0].code == "connection_error" and outcome[0].retryable
    assert time.monotonic() - started < 45
    assert local.exists()  # the body stays with the caller for the retry
    server.kill()
    server.start()
    assert server.pending_uploads(bucket), "the cut upload could not be aborted while down"
    # When the retry stores the image (retried again while the restarted store is still
    # warming up, as the message would be: a loaded CI machine once timed out the first
    # retry's parts)
    time.sleep(1.1)
    for attempt in range(1, 4):
        try:
            storage.put_file(IMAGE, local, content_type="image/jpeg", sha256="0" * 64)
            break
        except StorageUnavailable as exc:
            if not exc.retryable or attempt == 3:
                raise
    # Then only the image is in the bucket: no upload pending, no partial object
    assert server.pending_uploads(bucket) == []
    assert server.all_keys(bucket) == [IMAGE] and storage.read_bytes(IMAGE) == data


def test_a_storage_outage_is_retryable_and_the_store_works_again_after_it(
    make_seaweedfs, tmp_path
) -> None:
    server, bucket, storage = private_store(make_seaweedfs, tmp_path, read_timeout_s=2.0)
    put_image(storage, IMAGE, b"stored before the outage")
    local = storage.local_temp_dir(FOLDER) / ".tmp-next.part"
    local.write_bytes(b"next image")

    server.kill()  # the store goes away abruptly
    calls = {
        "put_file": lambda: storage.put_file(f"{FOLDER}/original/img_002.jpg", local,
                                             content_type="image/jpeg", sha256="0" * 64),
        "put_bytes": lambda: storage.put_bytes(META, b"{}"),
        "read_bytes": lambda: storage.read_bytes(IMAGE),
        "stat": lambda: storage.stat(IMAGE),
        "list": lambda: storage.list(FOLDER),
        "delete": lambda: storage.delete([IMAGE]),
        "move_folder": lambda: storage.move_folder(FOLDER, "serpy_db/hotels/42"),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            call()
        assert time.monotonic() - started < 10, name
        assert info.value.code == "connection_error" and info.value.retryable, name
        assert repr(bucket) in info.value.message, name
    assert local.exists()
    assert storage.check().startswith(f"error: s3 bucket {bucket!r}")

    server.start()  # same data directory and ports
    assert storage.check() == "ok"
    assert storage.read_bytes(IMAGE) == b"stored before the outage"
    storage.put_file(f"{FOLDER}/original/img_002.jpg", local, content_type="image/jpeg",
                     sha256="0" * 64)
    assert storage.list(FOLDER) == [IMAGE, f"{FOLDER}/original/img_002.jpg"]


def _copy(server: SeaweedFS, bucket: str, source: str, target: str) -> None:
    server.client().copy_object(Bucket=bucket, Key=target,
                                CopySource={"Bucket": bucket, "Key": source})


@pytest.mark.parametrize("cut", ["while copying", "while deleting"])
def test_an_interrupted_folder_move_completes_when_run_again(
    seaweedfs, s3_bucket, tmp_path, cut
) -> None:
    storage, new = make_storage(seaweedfs, s3_bucket, tmp_path), "serpy_db/hotels/42-ritz"
    img2 = f"{FOLDER}/original/img_002.png"
    put_image(storage, IMAGE, b"one")
    put_image(storage, img2, b"two")
    storage.put_bytes(META, b'{"document_id": "42"}')
    # Given the state a move cut short leaves (metadata.json is copied last, deleted last)
    _copy(seaweedfs, s3_bucket, IMAGE, f"{new}/original/img_001.jpg")
    if cut == "while deleting":
        _copy(seaweedfs, s3_bucket, img2, f"{new}/original/img_002.png")
        _copy(seaweedfs, s3_bucket, META, f"{new}/metadata.json")
        seaweedfs.client().delete_object(Bucket=s3_bucket, Key=IMAGE)
    # When the move runs again, it completes
    assert storage.move_folder(FOLDER, new) is True
    assert storage.list(FOLDER) == []
    assert storage.list(new) == [f"{new}/metadata.json", f"{new}/original/img_001.jpg",
                                 f"{new}/original/img_002.png"]
    assert storage.read_bytes(f"{new}/original/img_002.png") == b"two"
    assert storage.stat(f"{new}/original/img_001.jpg").sha256 == hashlib.sha256(b"one").hexdigest()
    assert seaweedfs.all_keys(s3_bucket) == storage.list()


def test_a_move_onto_another_documents_folder_is_refused(seaweedfs, s3_bucket, tmp_path) -> None:
    storage, other = make_storage(seaweedfs, s3_bucket, tmp_path), "serpy_db/hotels/hotel-ritz"
    put_image(storage, IMAGE, b"mine")
    storage.put_bytes(META, b'{"document_id": "42"}')
    storage.put_bytes(f"{other}/metadata.json", b'{"document_id": "hotel-ritz"}')
    before = seaweedfs.all_keys(s3_bucket)
    with pytest.raises(FileExistsError):
        storage.move_folder(FOLDER, other)
    assert seaweedfs.all_keys(s3_bucket) == before


def test_health_names_a_missing_bucket(seaweedfs, tmp_path) -> None:
    storage = make_storage(seaweedfs, "no-such-bucket-4242", tmp_path)
    assert storage.check() == (
        "error: s3 bucket 'no-such-bucket-4242': head bucket: the bucket does not exist")
    with pytest.raises(StorageUnavailable, match="no-such-bucket-4242.*does not exist"):
        storage.put_bytes(META, b"{}")


def test_refused_credentials_name_the_bucket_and_never_show_a_key(
    make_seaweedfs, tmp_path, monkeypatch, caplog
) -> None:
    server = make_seaweedfs(identities=[identity(ACCESS_KEY, SECRET_KEY)])
    bucket = server.create_bucket()
    # botocore logs whole signed requests at DEBUG: as in a fresh process with LOG_LEVEL=DEBUG
    botocore_logger = logging.getLogger("botocore")
    previous = botocore_logger.level
    botocore_logger.setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    try:
        _refused_credentials(server, bucket, tmp_path, monkeypatch, caplog)
    finally:
        botocore_logger.setLevel(previous)


def _refused_credentials(server, bucket, tmp_path, monkeypatch, caplog) -> None:
    assert make_storage(server, bucket, tmp_path).check() == "ok"
    put_image(make_storage(server, bucket, tmp_path), IMAGE, b"signed with the right key")

    wrong_secret = "wrong-secret-key-987654321"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    storage = make_storage(server, bucket, tmp_path)
    message = storage.check()
    assert message.startswith(f"error: s3 bucket {bucket!r}: head bucket: access refused")
    with pytest.raises(StorageUnavailable) as info:
        storage.read_bytes(IMAGE)
    assert "access refused" in info.value.message and repr(bucket) in info.value.message
    assert "urllib3.connectionpool" in caplog.text  # DEBUG records were captured
    for text in (message, info.value.message, caplog.text):
        assert SECRET_KEY not in text and wrong_secret not in text and ACCESS_KEY not in text


def test_temp_dirs_of_dead_processes_are_removed_at_start(seaweedfs, s3_bucket, tmp_path) -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    # (no process can have that pid; names as tempfile.mkdtemp makes them, private to us)
    dead = tmp_path / "tmp" / f"images-service-{pid_max + 1}-k2j4x9"
    alive = tmp_path / "tmp" / f"images-service-{os.getppid()}-a8c1q0"
    for directory in (dead, alive):
        directory.mkdir(parents=True)
        directory.chmod(0o700)
        (directory / ".tmp-body.part").write_bytes(b"partial")
    make_storage(seaweedfs, s3_bucket, tmp_path)
    assert not dead.exists() and alive.exists()
