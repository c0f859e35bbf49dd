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
PREFIX = "isv:caps"

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fleet, host = KEYS[1], KEYS[2]
local lease, fleet_limit, host_limit, token = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
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
        self._held: dict[str, str] = {}  # token -> host key
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    fleet_key = f"{PREFIX}:fleet"

    @staticmethod
    def host_key(host: str) -> str:
        return f"{PREFIX}:host:{host}"

    def try_acquire(self, host: str) -> str | None:
        token = uuid.uuid4().hex
        key = self.host_key(host)
        ok = self._acquire(keys=[self.fleet_key, key],
                           args=[self.lease_ms, self.fleet_limit, self.host_limit, token])
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

    def release(self, token: str) -> None:
        with self._lock:
            key = self._held.pop(token, None)
        if key is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.fleet_key, token)
        pipe.zrem(key, token)
        try:
            pipe.execute()
        except redis.RedisError:  # the lease expires by itself
            log.warning("could not release download slot; it expires in %s ms", self.lease_ms)

    def in_use(self, host: str | None = None) -> int:
        key = self.host_key(host) if host else self.fleet_key
        now_ms = int(time.time() * 1000)
        return int(self.redis.zcount(key, now_ms, "+inf"))

    def close(self) -> None:
        self._stop.set()

    # --- lease renewal ----------------------------------------------------------------------

    def _ensure_renewer(self) -> None:
        if self._renewer is not None and self._renewer.is_alive():
            return
        with self._lock:
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_loop, name="caps-renewer",
                                                 daemon=True)
                self._renewer.start()

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
