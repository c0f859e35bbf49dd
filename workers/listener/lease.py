"""Leader election between listener processes: a lease in Redis with a fencing epoch.

One key holds the leader's random token with a TTL (``LEASE_TTL_MS``); acquiring it (SET NX)
and taking a new epoch (INCR) happen in one Lua script, so every term of leadership has an
epoch larger than all before it. The leader renews every ``RENEW_INTERVAL_S`` from a thread
of its own (a long MongoDB call in the main loop never starves it); a standby tries to
acquire every ``ACQUIRE_INTERVAL_S``, so it takes over at most TTL + interval (~11 s) after
the leader's death.

The leader trusts its lease only until ``send time of the last successful renewal + TTL -
SAFETY_MARGIN_S``, measured on its own monotonic clock, which keeps running while the process
is paused (SIGSTOP) or cut off from Redis. So a leader that wakes after its lease expired
sees :meth:`Lease.valid` false before anything else, without asking Redis; the main loop
checks it right before every enqueue and every checkpoint write, and checkpoint writes are
also fenced in MongoDB by the epoch (workers/listener/checkpoint.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import redis

from images_service import metrics

log = logging.getLogger(__name__)

#: Lifetime of the lease in Redis (milliseconds) unless renewed.
LEASE_TTL_MS = 10_000
#: The leader renews this often (seconds).
RENEW_INTERVAL_S = 2.0
#: A standby tries to take the lease this often (seconds).
ACQUIRE_INTERVAL_S = 1.0
#: The leader stops trusting its lease this long (seconds) before Redis would expire it.
SAFETY_MARGIN_S = 2.0

# Our own token still in the key (we dropped the lease locally, e.g. after a pause) counts as
# free: a new term, with a new epoch, either way.
_ACQUIRE = """
if redis.call('get', KEYS[1]) == ARGV[1]
   or redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return redis.call('incr', KEYS[2])
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Raise the epoch counter to at least ARGV[2] while we hold the lease (Redis lost its data).
_RAISE_EPOCH = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
local current = tonumber(redis.call('get', KEYS[2]) or '0')
local wanted = tonumber(ARGV[2])
if current < wanted then redis.call('set', KEYS[2], wanted); return wanted end
return current
"""


class Lease:
    """This process's view of the leader lease; thread-safe."""

    def __init__(self, client: redis.Redis, name: str, *, ttl_ms: int = LEASE_TTL_MS,
                 safety_margin_s: float = SAFETY_MARGIN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = client
        self.key = f"isv:listener:{{{name}}}:lease"
        self.epoch_key = f"isv:listener:{{{name}}}:epoch"
        self.ttl_ms = ttl_ms
        self.safety_margin_s = safety_margin_s
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.epoch = 0
        self._valid_until = 0.0
        self._held = False
        self._lock = threading.Lock()
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._raise_epoch = client.register_script(_RAISE_EPOCH)

    def _trust_until(self, sent_at: float) -> float:
        return sent_at + self.ttl_ms / 1000 - self.safety_margin_s

    @property
    def held(self) -> bool:
        return self._held

    def valid(self) -> bool:
        """Held, and surely not yet expired in Redis (local monotonic deadline)."""
        with self._lock:
            return self._held and self.clock() < self._valid_until

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True on success (``epoch`` is then new)."""
        sent_at = self.clock()
        epoch = int(self._acquire(keys=[self.key, self.epoch_key], args=[self.token, self.ttl_ms]))
        if not epoch:
            return False
        with self._lock:
            self._held, self.epoch = True, epoch
            self._valid_until = self._trust_until(sent_at)
        metrics.LISTENER_LEADER.set(1)
        log.info("listener lease acquired, epoch %d", epoch)
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and the lease is dropped) when someone else holds it.

        A Redis error propagates and leaves the local deadline as it was: the lease then
        lapses on its own if Redis stays away.
        """
        if not self._held:
            return False
        sent_at = self.clock()
        if int(self._renew(keys=[self.key], args=[self.token, self.ttl_ms])):
            with self._lock:
                if self._held:
                    self._valid_until = self._trust_until(sent_at)
            return True
        self.drop("lease taken by another listener")
        return False

    def raise_epoch(self, at_least: int) -> int:
        """Make our epoch at least ``at_least`` (MongoDB remembers a larger one than Redis)."""
        epoch = int(self._raise_epoch(keys=[self.key, self.epoch_key], args=[self.token, at_least]))
        if epoch:
            with self._lock:
                self.epoch = max(self.epoch, epoch)
        return self.epoch

    def drop(self, reason: str) -> None:
        """Stop trusting the lease locally (it is lost, or we are stepping down)."""
        with self._lock:
            was_held, self._held, self._valid_until = self._held, False, 0.0
        if was_held:
            metrics.LISTENER_LEADER.set(0)
            log.warning("listener lease dropped (epoch %d): %s", self.epoch, reason)

    def release(self) -> None:
        """Step down: drop locally and delete the key if it is still ours (clean stop)."""
        held = self._held
        self.drop("released")
        if held:
            try:
                self._release(keys=[self.key], args=[self.token])
            except redis.RedisError as exc:
                log.warning("could not release the lease (it will expire): %s", exc)


class LeaseKeeper(threading.Thread):
    """Renews a held lease every ``interval_s`` until stopped."""

    def __init__(self, lease: Lease, stop: threading.Event,
                 interval_s: float = RENEW_INTERVAL_S) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.lease = lease
        self.stop_event = stop
        self.interval_s = interval_s

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            if not self.lease.held:
                continue
            if not self.lease.valid():
                # Paused or cut off for longer than the lease: another listener may lead now.
                self.lease.drop("lease expired before it could be renewed")
                continue
            try:
                self.lease.renew()
            except redis.RedisError as exc:
                log.warning("lease renewal failed: %s", exc)
