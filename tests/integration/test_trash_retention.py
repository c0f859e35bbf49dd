"""Trash retention (contract §15): the service removes expired trash itself, one process of the
fleet per pass, on both storage backends.

The real sweeper thread (workers/sweeper.py) runs on an in-process pipeline context wired to
nx-27017, Redis and the filesystem or a SeaweedFS bucket; trashed folders carry a
``deleted_at`` stamped in the past, as a trash some days old would.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client import REGISTRY

from images_service.backends import mongo_client
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from images_service.storage import trash
from images_service.storage.factory import create_storage
from tests.support.listener import wait_until
from workers.pipeline import DownloadPipeline
from workers.sweeper import Sweeper
from workers.trash_retention import TICK_KEY, TrashRetention


def _expired_count() -> float:
    return REGISTRY.get_sample_value("images_trash_total", {"action": "expired"}) or 0.0


@pytest.fixture
def pipeline(make_settings, any_storage_env):
    settings = make_settings({"TRASH_RETENTION_DAYS": "7", **any_storage_env})
    client = redis.Redis.from_url(settings.redis_url)
    pipeline = DownloadPipeline(settings, mongo=mongo_client(settings), redis_client=client,
                                enqueuer=Enqueuer(build_broker(settings, client=client)))
    yield pipeline
    pipeline.close()


def _trashed(storage, name: str, days_ago: float) -> str:
    folder = f"serpy_db/hotels/{name}"
    storage.put_bytes(f"{folder}/original/img_001.jpg", b"jpeg bytes", content_type="image/jpeg")
    storage.put_bytes(f"{folder}/metadata.json",
                      json.dumps({"document_id": name, "images": [{"index": 1}]}).encode())
    assert trash.trash_folder(storage, folder,
                              now=datetime.now(UTC) - timedelta(days=days_ago))
    return folder


def test_the_sweeper_removes_trash_past_the_retention(pipeline):
    storage = create_storage(pipeline.ctx.settings)
    bin_ = storage.trash()
    # Given folders deleted 8 days, 6 days and 6 days 23 hours ago, with a retention of 7 days
    old = _trashed(storage, "old", 8)
    recent = _trashed(storage, "recent", 6)
    nearly = _trashed(storage, "nearly", 6.96)
    expired_before = _expired_count()

    # When the sweeper thread runs (passes every 50 ms here)
    stop = threading.Event()
    sweeper = Sweeper(pipeline.ctx, pipeline.finisher, interval_s=0.05)
    thread = threading.Thread(target=sweeper.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: bin_.list(old) == [], what="the expired folder removed")
    finally:
        stop.set()
        thread.join(10)

    # Then only the expired one is gone, counted "expired"; the others keep every file
    assert _expired_count() - expired_before == 1
    assert len(bin_.list(recent)) == 2 and len(bin_.list(nearly)) == 2
    assert sorted(item.folder for item in trash.items(storage, "serpy_db", "hotels")) == [
        "nearly", "recent"]
    storage.close()


def test_one_process_of_the_fleet_makes_each_pass(pipeline):
    storage = create_storage(pipeline.ctx.settings)
    old = _trashed(storage, "old", 30)
    first, second = TrashRetention(pipeline.ctx), TrashRetention(pipeline.ctx)

    assert first.tick() == [old]
    # Another process within the interval does nothing (the Redis key elected the first)...
    later = _trashed(storage, "later", 30)
    assert second.tick() is None and storage.trash().list(later) != []
    # ...until the interval has passed (its key expired)
    pipeline.ctx.redis.delete(TICK_KEY)
    assert second.tick() == [later]
    assert storage.trash().list("") == []
    storage.close()


def test_a_folder_trashed_again_meanwhile_is_kept(any_storage):
    # Given an expired trashed folder that is trashed again (a fresh deleted_at) between the
    # pass's first read and its lock, as a concurrent trash_document would
    storage = any_storage
    old = _trashed(storage, "again", 30)

    @contextmanager
    def lock_after_a_new_trash(key: str):
        _trashed(storage, "again", 0)
        yield

    # When the pass removes what it found expired
    assert trash.expire(storage, timedelta(days=7), lock=lock_after_a_new_trash) == []

    # Then the fresh copy is kept
    assert len(storage.trash().list(old)) == 2
