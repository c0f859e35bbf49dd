"""Fleet-wide and per-host download caps shared by every worker process, through Redis.

Each cap is a sorted set of leases (member: a random token, score: its expiry in Redis server
milliseconds). Acquiring takes a slot in the fleet set *and* the host set in one Lua script,
after dropping expired leases, so the two caps are never out of step. A process renews the
leases it holds every ``RENEW_EVERY_S``; a worker killed with SIGKILL stops renewing and its
slots come back after at most ``LEASE_MS`` — seconds, not the minutes a time-limit-based
scheme would need.

Why not Dramatiq's ConcurrentRateLimiter: it raises RateLimitExceeded, which the Retries
middleware counts as a failure (burning the message's retry budget), and its mutex lease
cannot be renewed while a long download is in flight.

Releasing rides on the next acquire: :meth:`DownloadCaps.release` with ``defer=True`` only
notes the token, and the same thread's next :meth:`~DownloadCaps.try_acquire` removes it in
the acquire script, so a busy download thread makes one Redis round trip per image instead
of two (the release was the largest single Redis cost in the benchmark's profile). A thread
that takes no new slot has its deferred releases sent by a flusher thread after
``FLUSH_AFTER_S``: a slot is back in the fleet at most that late.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import Callable

import redis

log = logging.getLogger(__name__)

#: A lease lives this long without renewal (milliseconds).
LEASE_MS = 15_000
#: Held leases are renewed this often (seconds).
RENEW_EVERY_S = 4.0
#: A deferred release not carried by an acquire is sent after this long (seconds).
FLUSH_AFTER_S = 0.02
PREFIX = "isv:caps"

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fleet, host = KEYS[1], KEYS[2]
local lease, fleet_limit, host_limit, token = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
-- deferred releases of this thread first: (host key, token) pairs
for i = 5, #ARGV, 2 do
  redis.call('ZREM', fleet, ARGV[i + 1])
  redis.call('ZREM', ARGV[i], ARGV[i + 1])
end
redis.call('ZREMRANGEBYSCORE', fleet, '-inf', now)
redis.call('ZREMRANGEBYSCORE', host, '-inf', now)
if redis.call('ZCARD', fleet) >= fleet_limit then return 0 end
if redis.call('ZCARD', host) >= host_limit then return 0 end
redis.call('ZADD', fleet, now + lease, token)
redis.call('ZADD', host, now + lease, token)
redis.call('PEXPIRE', fleet, lease * 4)
redis.call('PEXPIRE', host, lease * 4)
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local host, token = ARGV[i], ARGV[i + 1]
  redis.call('ZADD', KEYS[1], 'XX', now + lease, token)
  redis.call('ZADD', host, 'XX', now + lease, token)
  redis.call('PEXPIRE', host, lease * 4)
end
redis.call('PEXPIRE', KEYS[1], lease * 4)
return 1
"""


_RELEASE = """
for i = 1, #ARGV, 2 do
  redis.call('ZREM', KEYS[1], ARGV[i + 1])
  redis.call('ZREM', ARGV[i], ARGV[i + 1])
end
return 1
"""


class SlotWaitCancelled(Exception):
    """The caller asked to stop waiting for a slot (job cancelled, shutting down)."""


class DownloadCaps:
    """Acquire/release download slots; one instance per process, thread-safe."""

    def __init__(self, client: redis.Redis, *, fleet_limit: int, host_limit: int,
                 lease_ms: int = LEASE_MS) -> None:
        self.redis = client
        self.fleet_limit = fleet_limit
        self.host_limit = host_limit
        self.lease_ms = lease_ms
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._held: dict[str, str] = {}  # token -> host key
        # Released but not yet sent: token -> (host key, when); each entry is sent by exactly
        # one party (its thread's next acquire, or the flusher), under _lock.
        self._deferred: dict[str, tuple[str, float]] = {}
        self._local = threading.local()  # .tokens: this thread's deferred tokens
        self._has_deferred = threading.Event()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    fleet_key = f"{PREFIX}:fleet"

    @staticmethod
    def host_key(host: str) -> str:
        return f"{PREFIX}:host:{host}"

    def try_acquire(self, host: str) -> str | None:
        token = uuid.uuid4().hex
        key = self.host_key(host)
        releasing = self._take_own_deferred()
        args: list[object] = [self.lease_ms, self.fleet_limit, self.host_limit, token]
        for old_token, old_key in releasing:
            args += [old_key, old_token]
        try:
            ok = self._acquire(keys=[self.fleet_key, key], args=args)
        except redis.RedisError:
            if releasing:
                self._send_releases(releasing)  # best effort; else their leases expire
            raise
        if not ok:
            return None
        with self._lock:
            self._held[token] = key
        self._ensure_renewer()
        return token

    def acquire(self, host: str, *, should_stop: Callable[[], bool] = lambda: False,
                check_every_s: float = 1.0) -> str:
        """Wait for a slot on ``host``; polls with jittered sleeps, asking ``should_stop``
        about once a second. Waiting never counts as a failed attempt."""
        delay = 0.005
        next_check = time.monotonic() + check_every_s
        while True:
            token = self.try_acquire(host)
            if token:
                return token
            if time.monotonic() >= next_check:
                if should_stop():
                    raise SlotWaitCancelled(host)
                next_check = time.monotonic() + check_every_s
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    def release(self, token: str, *, defer: bool = False) -> None:
        """Give the slot back: at once, or (``defer``) with this thread's next acquire, or
        by the flusher within ``FLUSH_AFTER_S`` if that does not come first."""
        with self._lock:
            key = self._held.pop(token, None)
            if key is not None and defer:
                self._deferred[token] = (key, time.monotonic())
                self._has_deferred.set()
        if key is None:
            return
        if not defer:
            self._send_releases([(token, key)])
            return
        tokens = getattr(self._local, "tokens", None)
        if tokens is None:
            tokens = self._local.tokens = []
        tokens.append(token)
        self._ensure_thread("_flusher", self._flush_loop, "caps-flusher")

    def _take_own_deferred(self) -> list[tuple[str, str]]:
        """This thread's deferred releases the flusher has not sent yet (now ours to send)."""
        tokens = getattr(self._local, "tokens", None)
        if not tokens:
            return []
        self._local.tokens = []
        taken = []
        with self._lock:
            for token in tokens:
                entry = self._deferred.pop(token, None)
                if entry is not None:
                    taken.append((token, entry[0]))
        return taken

    def _send_releases(self, releases: list[tuple[str, str]]) -> None:
        args: list[object] = []
        for token, key in releases:
            args += [key, token]
        try:
            self._release(keys=[self.fleet_key], args=args)
        except redis.RedisError:  # the leases expire by themselves
            log.warning("could not release %d download slot(s); they expire in %s ms",
                        len(releases), self.lease_ms)

    def in_use(self, host: str | None = None) -> int:
        key = self.host_key(host) if host else self.fleet_key
        now_ms = int(time.time() * 1000)
        return int(self.redis.zcount(key, now_ms, "+inf"))

    def close(self) -> None:
        """Stop renewing; send every deferred release now."""
        self._stop.set()
        self._has_deferred.set()
        with self._lock:
            due = [(token, key) for token, (key, _at) in self._deferred.items()]
            self._deferred.clear()
        if due:
            self._send_releases(due)

    # --- lease renewal ----------------------------------------------------------------------

    def _ensure_renewer(self) -> None:
        self._ensure_thread("_renewer", self._renew_loop, "caps-renewer")

    def _ensure_thread(self, attr: str, target: Callable[[], None], name: str) -> None:
        thread = getattr(self, attr)
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            thread = getattr(self, attr)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=target, name=name, daemon=True)
                setattr(self, attr, thread)
                thread.start()

    def _flush_loop(self) -> None:
        """Send deferred releases no acquire has carried within FLUSH_AFTER_S."""
        while not self._stop.is_set():
            self._has_deferred.wait()
            if self._stop.wait(FLUSH_AFTER_S):
                return
            now = time.monotonic()
            with self._lock:
                due = [(token, key) for token, (key, at) in self._deferred.items()
                       if now - at >= FLUSH_AFTER_S]
                for token, _key in due:
                    del self._deferred[token]
                if not self._deferred:
                    self._has_deferred.clear()
            if due:
                self._send_releases(due)

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            with self._lock:
                held = list(self._held.items())
            if not held:
                continue
            args: list[object] = [self.lease_ms]
            for token, key in held:
                args += [key, token]
            try:
                self._renew(keys=[self.fleet_key], args=args)
            except redis.RedisError as exc:
                log.warning("could not renew download slots: %s", exc)
