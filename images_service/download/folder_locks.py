"""The locks around a document folder's metadata.json (used by :mod:`.folder` only).

Every change of metadata.json is a read-modify-write; :class:`~.folder.DocumentFolder` makes it
with a version check, so two writers can never lose each other's records. The lock only keeps
them from wasting rounds on each other:

* :class:`RedisFolderLocks` — the pipeline's, fleet-wide. Taking it also answers whether the
  message's work is still wanted: when the job's live key (its progress hash, removed the
  moment the job ends, :mod:`images_service.jobs.progress`) is gone, acquiring raises
  :class:`~images_service.errors.StaleMessage` in the same Redis round trip.
* :func:`default_lock` — without Redis (the synchronous engine of the tests, bench and CLI): a
  lock private to this process, striped so memory stays bounded however many folders there are.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from contextlib import AbstractContextManager
from typing import Any

import redis

from images_service.errors import StaleMessage
from images_service.storage.backend import Storage

#: Process-local locks are striped: two folders sharing a stripe only wait for each other.
STRIPES = 256
_STRIPES = [threading.Lock() for _ in range(STRIPES)]

#: A Redis folder lock expires after this long (an expired holder is caught by the version
#: check) and is waited for at most this long.
LOCK_TTL_MS = 60_000
LOCK_WAIT_S = 60.0

# -1: the job's live key is gone (the job ended); 1: acquired; 0: held by another writer.
_ACQUIRE = """
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def default_lock(storage: Storage, folder: str) -> AbstractContextManager[Any]:
    """The lock that serialises writers of ``folder`` within this process."""
    return _STRIPES[zlib.crc32(f"{storage.location}\0{folder}".encode()) % STRIPES]


class RedisFolderLocks:
    """Fleet-wide folder locks bound to one job: ``locks(folder)`` is a context manager."""

    def __init__(self, client: redis.Redis, *, live_key: str = "",
                 ttl_ms: int = LOCK_TTL_MS, wait_s: float = LOCK_WAIT_S) -> None:
        self.redis = client
        self.live_key = live_key
        self.ttl_ms = ttl_ms
        self.wait_s = wait_s
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def __call__(self, folder: str) -> _Held:
        return _Held(self, f"isv:lock:{folder}")


class _Held:
    def __init__(self, locks: RedisFolderLocks, key: str) -> None:
        self.locks = locks
        self.key = key
        self.token = uuid.uuid4().hex

    def __enter__(self) -> _Held:
        locks = self.locks
        deadline = time.monotonic() + locks.wait_s
        pause_s = 0.005
        while True:
            got = locks._acquire(keys=[self.key, locks.live_key], args=[self.token, locks.ttl_ms])
            if got == 1:
                return self
            if got == -1:
                raise StaleMessage("the job has ended")
            if time.monotonic() >= deadline:
                raise redis.exceptions.LockError(f"{self.key} held for over {locks.wait_s} s")
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.1)

    def __exit__(self, *exc_info: object) -> None:
        self.locks._release(keys=[self.key], args=[self.token])
