"""Download slots in Redis (real Redis, the test's own DB): caps, leases, deferred releases."""

from __future__ import annotations

import threading
import time

import redis

from images_service.download import caps
from images_service.download.caps import DownloadCaps


def _caps(redis_url: str, **limits: int) -> DownloadCaps:
    return DownloadCaps(redis.Redis.from_url(redis_url), fleet_limit=limits.get("fleet", 4),
                        host_limit=limits.get("host", 2))


def _members(client: redis.Redis, key: str) -> set[str]:
    return {m.decode() for m in client.zrange(key, 0, -1)}


def test_host_and_fleet_caps_hold_across_instances(redis_url: str) -> None:
    a, b = _caps(redis_url), _caps(redis_url)  # two worker processes
    try:
        assert a.try_acquire("x") and b.try_acquire("x")
        assert a.try_acquire("x") is None  # host cap 2
        assert a.try_acquire("y") and b.try_acquire("y")
        assert b.try_acquire("z") is None  # fleet cap 4
        assert a.in_use() == 4 and a.in_use("x") == 2
    finally:
        a.close()
        b.close()


def test_a_release_gives_the_slot_back_at_once(redis_url: str) -> None:
    c = _caps(redis_url, host=1)
    try:
        token = c.try_acquire("x")
        assert c.try_acquire("x") is None
        c.release(token)
        assert c.in_use("x") == 0 and c.in_use() == 0
    finally:
        c.close()


def test_a_deferred_release_rides_on_the_same_threads_next_acquire(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    c = _caps(redis_url, host=1)
    try:
        old = c.try_acquire("x")
        c.release(old, defer=True)
        assert old in _members(client, c.fleet_key)  # not sent yet ...
        new = c.try_acquire("x")  # ... the acquire removes it first, so the host slot is free
        assert new is not None
        assert _members(client, c.fleet_key) == {new}
        assert _members(client, c.host_key("x")) == {new}
    finally:
        c.close()


def test_a_deferred_release_no_acquire_carries_is_flushed_soon(redis_url: str) -> None:
    c = _caps(redis_url)
    try:
        token = c.try_acquire("x")
        done = threading.Event()

        def other_thread() -> None:  # takes a slot, defers its release, then goes idle
            c.release(c.try_acquire("y"), defer=True)
            done.set()

        threading.Thread(target=other_thread).start()
        assert done.wait(5)
        c.release(token, defer=True)
        deadline = time.monotonic() + 5
        while c.in_use() and time.monotonic() < deadline:
            time.sleep(caps.FLUSH_AFTER_S / 2)
        assert c.in_use() == 0
    finally:
        c.close()


def test_close_sends_every_deferred_release(redis_url: str, monkeypatch) -> None:
    monkeypatch.setattr(caps, "FLUSH_AFTER_S", 3600.0)  # the flusher would not come in time
    c = _caps(redis_url)
    tokens = [c.try_acquire("x"), c.try_acquire("y")]
    for token in tokens:
        c.release(token, defer=True)
    assert c.in_use() == 2
    c.close()
    assert c.in_use() == 0
