"""Every URL fetched once across documents (contract §16): copy what is already stored.

A chain's logo or a shared gallery is named by many documents. Before a download requests a
URL, the pipeline asks here:

1. **Known?** The URL index (:mod:`.url_index`) has a stored copy of it, checked within
   ``REFRESH_AFTER_DAYS`` and not known to be missing at its source: the copy is verified
   (size and sha256 of the stored object, as the skip check does) and copied to this
   document's index server-side (a hard link on the filesystem, CopyObject on S3); the record
   says ``"copied_from"``; no request is made.
2. **Being fetched right now** by another document (another thread, process or host)? Each
   URL not in the index is *claimed* in Redis before its request; a second document naming it
   waits for the claim to go, then copies what the first download stored and indexed (or,
   when it failed, claims the URL itself). A download that stored its URL also marks it
   ``done`` in its job's Redis state, so a document of the same job that reaches the URL just
   after (it looked in the index before the URL was there) copies instead of claiming it
   again; the marker goes with the job's state when the job ends, like every key of a job.
   So the same URL in five documents of one job costs one request. Across jobs the same
   window exists (two change-stream jobs of documents naming one logo, inserted together):
   a download that stored its URL leaves its claim behind as ``stored`` for
   ``STORED_TTL_S``, and a later claim of it is answered ``done`` (look in the index again,
   copy) instead of being granted a second request.

A claim lives ``CLAIM_TTL_S`` and is renewed every ``RENEW_EVERY_S`` while its download goes
on (like the download caps' leases), so a worker killed mid-download frees its claims within
seconds, and a waiting document gives up waiting after the longest a download may take.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import redis

from images_service import metrics
from images_service.config.settings import Settings
from images_service.download.folder import DocumentFolder
from images_service.download.planning import ImageTask
from images_service.download.url_index import UrlIndex, url_key
from images_service.storage import layout
from images_service.storage.metadata import DOWNLOADED, utc_now_iso

logger = logging.getLogger(__name__)

#: A claim expires this long after its last renewal (seconds) ...
CLAIM_TTL_S = 15
#: ... and is renewed this often while its download goes on.
RENEW_EVERY_S = 4.0
#: How often a document waiting for another one's download looks again (seconds).
POLL_S = 0.05
#: How long a stored URL's claim stays behind as ``stored`` (seconds): longer than a message
#: takes from its index lookup to its last claim, short enough to keep Redis small (one key
#: per URL stored in that time).
STORED_TTL_S = 300
STORED = b"stored"
DAY_S = 86_400.0

# KEYS: the URL's claim, the job's state hash (contract §10: gone when the job ends).
# Returns 'done' (stored by this job, or by any download in the last STORED_TTL_S), 'busy'
# (claimed by another download) or 'mine'.
_CLAIM = """
if KEYS[2] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'done' end
local held = redis.call('GET', KEYS[1])
if held == 'stored' then return 'done' end
if held then return 'busy' end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 'mine'
"""
# ARGV: the claim's token, the job's field, 1 when the URL was stored (mark it done), the
# stored marker's lifetime.
_RELEASE = """
if ARGV[3] == '1' and KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], 'done')
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], 'stored', 'EX', ARGV[4])
  return 1
end
return redis.call('DEL', KEYS[1])
"""


class FetchOnce:
    """Shared by a worker process's download threads."""

    def __init__(self, client: redis.Redis, index: UrlIndex, settings: Settings) -> None:
        self.redis = client
        self.index = index
        self.settings = settings
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._held: dict[str, str] = {}  # claim key -> token, renewed while held
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._closed = threading.Event()

    def known(self, urls: list[str]) -> dict[str, dict[str, Any]]:
        """The index's entries of ``urls`` (one query for a message's documents)."""
        return self.index.lookup(urls)

    def copy(self, folder: DocumentFolder, task: ImageTask,
             entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The record of ``task`` made from ``entry``'s stored copy, or None when there is no
        usable copy (missing, stale, changed in storage, or this very file)."""
        if entry is None or not self._fresh(entry):
            return None
        source = entry.get("copy")
        extension = layout.EXTENSIONS.get(str(entry.get("format")))
        if not isinstance(source, str) or extension is None:
            return None
        destination = layout.image_key(folder.key, task.index, extension)
        if source == destination:
            return None
        storage = folder.storage
        stat = storage.stat(source)
        if stat is None or stat.size_bytes != entry.get("bytes"):
            return None
        sha256 = stat.sha256 if stat.sha256 is not None else storage.sha256_of(source)
        if sha256 != entry.get("sha256"):
            return None
        try:
            storage.copy_many([(source, destination)])
        except FileNotFoundError:
            return None
        metrics.COPIED.inc()
        record: dict[str, Any] = {
            "index": task.index, "url": task.url, "status": DOWNLOADED,
            "file": layout.image_relpath(task.index, extension),
            # What the image shows too (§18): a copy is the same picture; its placeholder is
            # decided again under this folder's rules by backfill below.
            **{name: entry[name] for name in ("sha256", "bytes", "format", "width", "height",
                                              "content_type", "http_status", "phash",
                                              "placeholder")
               if name in entry},
            "attempts": 0,
            "downloaded_at": utc_now_iso(),
        }
        for name in ("etag", "last_modified"):
            if name in entry:
                record[name] = entry[name]
        record["checked_at"] = _iso(entry.get("checked_at"))
        record["copied_from"] = source
        logger.info("image %d of %s copied from %s (no request)", task.index, folder.key,
                    PurePosixPath(source).parent.parent)
        return folder.backfill(record, self.settings)  # its variants, from the copy

    def _fresh(self, entry: Mapping[str, Any]) -> bool:
        if (entry.get("source") or {}).get("status") in ("missing", "gone"):
            return False
        days = self.settings.refresh_after_days
        checked = entry.get("checked_at")
        if not days:
            return True
        return isinstance(checked, (int, float)) and time.time() - checked <= days * DAY_S

    # -- claims ---------------------------------------------------------------------------------

    def claim(self, url: str, job_key: str = "") -> str | None:
        """Claim ``url`` for one request: a token to release; ``DONE`` when a download of the
        job (``job_key``: its state hash) stored it already; None when another download holds
        it (:meth:`wait` for it)."""
        token = uuid.uuid4().hex
        state = self._claim(keys=[_claim_key(url), job_key],
                            args=[_done_field(url), token, CLAIM_TTL_S])
        state = state.decode() if isinstance(state, bytes) else state
        if state == "done":
            return DONE
        if state != "mine":
            return None
        with self._held_lock:
            self._held[_claim_key(url)] = token
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, daemon=True,
                                                 name="fetch-claims")
                self._renewer.start()
        return token

    def release(self, url: str, token: str, *, job_key: str = "", stored: bool = False) -> None:
        """Give the claim up; ``stored``: the URL is now in the index (the job's other
        documents copy it from there)."""
        with self._held_lock:
            self._held.pop(_claim_key(url), None)
        self._release(**_release_call(url, token, job_key, stored))

    def release_many(self, claims: list[tuple[str, str, str, bool]]) -> None:
        """:meth:`release` of many (url, token, job_key, stored) claims in one round trip."""
        if not claims:
            return
        with self._held_lock:
            for url, _, _, _ in claims:
                self._held.pop(_claim_key(url), None)
        pipe = self.redis.pipeline(transaction=False)
        for url, token, job_key, stored in claims:
            self._release(**_release_call(url, token, job_key, stored), client=pipe)
        pipe.execute()

    def close(self) -> None:
        self._closed.set()

    def _renew(self) -> None:
        while not self._closed.wait(RENEW_EVERY_S):
            with self._held_lock:
                keys = list(self._held)
            if not keys:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for key in keys:
                    pipe.expire(key, CLAIM_TTL_S)
                pipe.execute()
            except redis.RedisError as exc:  # the claims expire: at worst a second request
                logger.warning("could not renew %d fetch claim(s): %s", len(keys), exc)

    def wait(self, url: str, *, timeout_s: float, stop: Any = None) -> dict[str, Any] | None:
        """Wait until nobody downloads ``url`` any more (at most ``timeout_s``); then its entry
        in the index, if that download made one."""
        deadline = time.monotonic() + timeout_s
        while self.redis.get(_claim_key(url)) not in (None, STORED):
            if time.monotonic() >= deadline or (stop is not None and stop()):
                return None
            time.sleep(POLL_S)
        return self.index.lookup([url]).get(url)


#: What :meth:`FetchOnce.claim` returns when the job stored the URL already.
DONE = "done"


def _release_call(url: str, token: str, job_key: str, stored: bool) -> dict[str, list]:
    """The release script's keys and arguments (one place for :meth:`FetchOnce.release` and
    :meth:`FetchOnce.release_many`)."""
    return {"keys": [_claim_key(url), job_key],
            "args": [token, _done_field(url), "1" if stored else "0", STORED_TTL_S]}


def _claim_key(url: str) -> str:
    return f"isv:fetch:{url_key(url)}"


def _done_field(url: str) -> str:
    """The job state's field marking ``url`` stored by one of its downloads."""
    return f"x:{url_key(url)}"


def _iso(epoch: Any) -> str:
    from datetime import datetime, timezone

    from images_service.storage.metadata import format_utc

    if isinstance(epoch, (int, float)):
        return format_utc(datetime.fromtimestamp(epoch, timezone.utc))
    return utc_now_iso()
