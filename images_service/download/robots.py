"""robots.txt for image requests (contract §17, RFC 9309), with ``RESPECT_ROBOTS_TXT``.

Each origin's ``/robots.txt`` (scheme, host and port: what RFC 9309 scopes a file to) is read
once for the whole fleet and kept in Redis (``isv:robots:<origin>``) for at most 24 hours;
each worker process also keeps what it read until that same expiry, so an image whose origin
is known costs no Redis round trip at all. One worker fetches while the others wait for its
result (a short Redis lock per origin). The fetch is an ordinary request to the host: through
the SSRF guard (:meth:`~images_service.fetching.fetcher.Fetcher.fetch_text`), holding one of
the host's slots, never while the host is paused; its outcome is not counted by the circuit
breaker.

What the answer means (RFC 9309 §2.3.1):

* 2xx: parsed with Protego (Scrapy's RFC 9309 parser) for ``USER_AGENT``'s product token: the
  group naming it, else the ``*`` group. A disallowed image fails ``robots_disallowed`` (not
  retried) without any request for it. ``Crawl-delay`` (capped at 30 s) becomes the host's
  minimum interval between request starts, kept by the slot acquisition.
* 4xx (and more than five redirects): no usable file, everything is allowed. A 429 is not
  "unavailable" but "slow down": it pauses the host and counts as unreachable.
* 5xx, no answer (timeout, connection refused): nothing is allowed until it can be read; the
  image fails like a connection error (retried with backoff) and the unreadable result is
  kept only half the shortest backoff, so the retry reads the file again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from protego import Protego

from images_service import metrics
from images_service.download import host_state
from images_service.download.caps import DownloadCaps, SlotWaitCancelled
from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher

log = logging.getLogger(__name__)

PREFIX = "isv:robots"
#: A readable (or absent) robots.txt is kept this long (RFC 9309: at most 24 hours).
CACHE_MS = 24 * 3600 * 1000
#: Bytes of a robots.txt parsed (RFC 9309 asks for at least 500 KiB).
MAX_BYTES = 512 * 1024
#: Longest Crawl-delay honoured (seconds).
MAX_CRAWL_DELAY_S = 30.0
#: Origins whose parsed file a process keeps.
LOCAL_ENTRIES = 1024
#: How often a worker waiting for another one's fetch looks for its result (seconds).
POLL_S = 0.05

PARSED, ALLOW_ALL, UNREACHABLE = "fetched", "allow_all", "unreachable"


@dataclass
class _Entry:
    state: str  #: fetched | allow_all | unreachable
    expires_ms: int  #: Unix milliseconds
    message: str = ""
    parser: Protego | None = None
    body: str = ""  #: the file as read (what the shared cache keeps)


def origin_of(url: str) -> tuple[str, str, str]:
    """(origin key, robots.txt URL, host) of an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    origin = f"{scheme}://{shown}:{port}"
    return origin, f"{origin}/robots.txt", host


class RobotsPolicy:
    """Answers "may this image be requested, and how far apart?" for one worker process."""

    def __init__(self, client: redis.Redis, fetcher: Fetcher, caps: DownloadCaps, *,
                 product_token: str, retry_backoff_min_ms: int,
                 pause_ms: Callable[[float | None], int]) -> None:
        self.redis = client
        self.fetcher = fetcher
        self.caps = caps
        self.token = product_token
        self.unreachable_ms = max(1, retry_backoff_min_ms // 2)
        self.pause_ms = pause_ms  #: the pause a 429/503 of robots.txt asks for (§8 backoff)
        self._local: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def check(self, url: str, *, should_stop: Callable[[], bool] = lambda: False) -> int:
        """The Crawl-delay (ms) to keep for ``url``'s host when it may be requested; raises
        DownloadError ``robots_disallowed`` (final) or ``connection_error`` (robots.txt
        unreadable: retried), and lets HostPaused / SlotWaitCancelled through."""
        origin, robots_url, host = origin_of(url)
        entry = self._entry(origin, robots_url, host, should_stop)
        if entry.state == UNREACHABLE:
            raise DownloadError("connection_error", f"robots.txt of {origin} could not be read "
                                f"({entry.message}): nothing is allowed until it can be")
        if entry.parser is None:
            return 0
        if not entry.parser.can_fetch(url, self.token):
            metrics.ROBOTS.labels("disallowed").inc()
            raise DownloadError("robots_disallowed",
                                f"{origin}/robots.txt disallows this URL for {self.token}")
        delay = entry.parser.crawl_delay(self.token)
        return int(min(float(delay), MAX_CRAWL_DELAY_S) * 1000) if delay else 0

    # -- the caches ---------------------------------------------------------------------------

    def _entry(self, origin: str, robots_url: str, host: str,
               should_stop: Callable[[], bool]) -> _Entry:
        key, lock = f"{PREFIX}:{origin}", f"{PREFIX}:lock:{origin}"
        next_check = time.monotonic() + 1.0
        # Waiters look often enough to see even an unreadable result before it expires.
        poll_s = min(POLL_S, self.unreachable_ms / 4000)
        while True:
            with self._lock:  # this process' copy (also: another thread's fetch just now)
                entry = self._local.get(origin)
            if entry is not None and entry.expires_ms > int(time.time() * 1000):
                return entry
            raw = self.redis.get(key)
            if raw is not None:
                return self._keep(origin, _decode(raw))
            lock_ms = int(self.fetcher.deadline_s * 1000) + 5000
            if self.redis.set(lock, "1", nx=True, px=lock_ms):
                try:
                    # Looked at again under the lock: the fetch that held it may have stored
                    # its result and let go between this thread's read and its lock.
                    raw = self.redis.get(key)
                    if raw is not None:
                        return self._keep(origin, _decode(raw))
                    entry = self._keep(origin, self._fetch(robots_url, host, should_stop))
                    ttl = max(1, entry.expires_ms - int(time.time() * 1000))
                    self.redis.set(key, _encode(entry), px=ttl)
                finally:
                    self.redis.delete(lock)
                return entry
            if time.monotonic() >= next_check:  # another worker is reading it
                if should_stop():
                    raise SlotWaitCancelled(host)
                next_check = time.monotonic() + 1.0
            time.sleep(poll_s)

    def _keep(self, origin: str, entry: _Entry) -> _Entry:
        with self._lock:
            if len(self._local) >= LOCAL_ENTRIES:
                now_ms = int(time.time() * 1000)
                self._local = {o: e for o, e in self._local.items() if e.expires_ms > now_ms}
                if len(self._local) >= LOCAL_ENTRIES:
                    self._local.clear()
            self._local[origin] = entry
        return entry

    # -- one fetch ----------------------------------------------------------------------------

    def _fetch(self, robots_url: str, host: str, should_stop: Callable[[], bool]) -> _Entry:
        token = self.caps.acquire(host, should_stop=should_stop)  # HostPaused goes through
        outcome, pause = host_state.NONE, 0
        try:
            try:
                answer = self.fetcher.fetch_text(robots_url, MAX_BYTES)
            except DownloadError as exc:
                if exc.code in ("blocked_address", "invalid_url"):
                    raise  # the image's own request would be refused the same way
                if exc.code == "too_many_redirects":
                    return self._result(ALLOW_ALL, exc.message)
                return self._result(UNREACHABLE, exc.message)
            status = answer.status
            if status in (429, 503):
                # "Slow down" from the host pauses it like any 429/503 (not counted by the
                # breaker: robots.txt fetches never are).
                outcome, pause = host_state.SLOW, self.pause_ms(answer.retry_after_s)
            if 200 <= status < 300:
                text = answer.body.decode("utf-8", errors="replace")
                return self._result(PARSED, "", Protego.parse(text), text)
            if 400 <= status < 500 and status != 429:
                return self._result(ALLOW_ALL, f"HTTP {status}")
            return self._result(UNREACHABLE, f"HTTP {status}")
        finally:
            self.caps.release(token, outcome=outcome, pause_ms=pause, count_for_breaker=False)

    def _result(self, state: str, message: str, parser: Protego | None = None,
                body: str = "") -> _Entry:
        metrics.ROBOTS.labels(state).inc()
        ttl = self.unreachable_ms if state == UNREACHABLE else CACHE_MS
        log.info("robots.txt: %s%s", state, f" ({message})" if message else "")
        return _Entry(state, int(time.time() * 1000) + ttl, message, parser, body)


def _encode(entry: _Entry) -> str:
    return json.dumps({"state": entry.state, "expires_ms": entry.expires_ms,
                       "message": entry.message, "body": entry.body})


def _decode(raw: bytes) -> _Entry:
    data = json.loads(raw)
    parser = Protego.parse(data["body"]) if data["state"] == PARSED else None
    return _Entry(data["state"], int(data["expires_ms"]), data.get("message", ""), parser)
