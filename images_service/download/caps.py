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

The host's politeness state (contract §17, :mod:`images_service.download.host_state`) rides
on the same round trip: the acquire script refuses a paused host (:class:`HostPaused`: the
caller delays the download, no retry spent) and one whose Crawl-delay has not passed, caps
the host at its current (adaptive) cap instead of ``MAX_CONCURRENT_PER_DOMAIN``, and applies
the outcome of the thread's previous request carried by its deferred release. A request's
failure or slow-down (429/503) is not deferred: it is sent at once with its release, so the
whole fleet sees a pause as soon as one worker does.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import redis

from images_service import metrics
from images_service.download import host_state

log = logging.getLogger(__name__)

#: A lease lives this long without renewal (milliseconds).
LEASE_MS = 15_000
#: Held leases are renewed this often (seconds).
RENEW_EVERY_S = 4.0
#: A deferred release not carried by an acquire is sent after this long (seconds).
FLUSH_AFTER_S = 0.02
PREFIX = host_state.PREFIX
#: Crawl-delay waits up to this long are slept by the download thread; longer ones, and
#: pauses, delay the download as a delayed message instead (milliseconds).
LOCAL_WAIT_MAX_MS = 1_000

# ARGV: prefix, clock override, lease, fleet limit, host max, token, host, crawl-delay ms,
# breaker failures, breaker base ms, breaker max ms, then this thread's deferred releases as
# (host, token, outcome, acquired at) quadruples. Returns {1, now, paused-until read} (a slot),
# {0, now} (a cap is full), {-1, wait ms, why, now} (the host is paused) or {-2, wait ms}
# (Crawl-delay).
_ACQUIRE = host_state.LUA + """
local prefix = ARGV[1]
local now = clock(ARGV[2])
local fleet, host_slots, hs = KEYS[1], KEYS[2], KEYS[3]
local lease, fleet_limit, host_max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local token, host, crawl_ms = ARGV[6], ARGV[7], tonumber(ARGV[8])
local nfail, base_ms, max_ms = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
-- deferred releases of this thread first, each with its request's outcome
for i = 12, #ARGV, 4 do
  redis.call('ZREM', fleet, ARGV[i + 1])
  redis.call('ZREM', prefix .. ':host:' .. ARGV[i], ARGV[i + 1])
  apply(prefix, ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 3]), now, 0, '1', host_max, nfail,
        base_ms, max_ms)
end
local s = redis.call('HMGET', hs, 'until', 'cap', 'next', 'hint', 'why')
local untl = num(s[1], 0)
if now < untl then return {-1, untl - now, s[5] or '', now} end
if crawl_ms > 0 then
  local nxt = num(s[3], 0)
  if now < nxt then
    local slot = math.max(num(s[4], 0), nxt)
    redis.call('HSET', hs, 'hint', slot + crawl_ms)
    return {-2, slot - now}
  end
end
redis.call('ZREMRANGEBYSCORE', fleet, '-inf', now)
redis.call('ZREMRANGEBYSCORE', host_slots, '-inf', now)
if redis.call('ZCARD', fleet) >= fleet_limit then return {0, now} end
local cap = math.min(num(s[2], host_max), host_max)
if redis.call('ZCARD', host_slots) >= cap then return {0, now} end
redis.call('ZADD', fleet, now + lease, token)
redis.call('ZADD', host_slots, now + lease, token)
redis.call('PEXPIRE', fleet, lease * 4)
redis.call('PEXPIRE', host_slots, lease * 4)
if crawl_ms > 0 then
  redis.call('HSET', hs, 'next', now + crawl_ms)
  if redis.call('PTTL', hs) < crawl_ms * 2 then redis.call('PEXPIRE', hs, crawl_ms * 2 + 60000) end
end
return {1, now, untl}
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

# ARGV: prefix, clock override, host max, breaker failures, base ms, max ms, then releases as
# (host, token, outcome, acquired at, pause ms, count for the breaker) sextuples. Returns the
# pause reasons the last one started and the host's paused-until after it.
_RELEASE = host_state.LUA + """
local prefix = ARGV[1]
local now = clock(ARGV[2])
local host_max, nfail = tonumber(ARGV[3]), tonumber(ARGV[4])
local base_ms, max_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local started, host = '', nil
for i = 7, #ARGV, 6 do
  host = ARGV[i]
  redis.call('ZREM', KEYS[1], ARGV[i + 1])
  redis.call('ZREM', prefix .. ':host:' .. host, ARGV[i + 1])
  started = apply(prefix, host, ARGV[i + 2], tonumber(ARGV[i + 3]), now, tonumber(ARGV[i + 4]),
                  ARGV[i + 5], host_max, nfail, base_ms, max_ms)
end
local untl = 0
if host then untl = num(redis.call('HGET', prefix .. ':hs:' .. host, 'until'), 0) end
return {started, untl, now}
"""


class SlotWaitCancelled(Exception):
    """The caller asked to stop waiting for a slot (job cancelled, shutting down)."""


class HostPaused(Exception):
    """No request may start to ``host`` for ``wait_ms`` more milliseconds: it is paused
    (``reason`` ``retry_after`` or ``breaker``) or its Crawl-delay has not passed
    (``crawl_delay``, a wait longer than a thread should sleep). The caller delays the download
    (a delayed message), which is not a failed attempt."""

    def __init__(self, host: str, wait_ms: int, reason: str) -> None:
        super().__init__(f"{host} is paused for {wait_ms} ms ({reason})")
        self.host, self.wait_ms, self.reason = host, max(0, int(wait_ms)), reason


@dataclass
class _Held:
    host: str
    acquired_at_ms: int  #: Redis time of the acquire: was it in flight when the host paused?


class DownloadCaps:
    """Acquire/release download slots; one instance per process, thread-safe.

    ``breaker_failures`` is ``HOST_BREAKER_FAILURES``; ``breaker_base_ms`` / ``breaker_max_ms``
    the breaker's first and longest pause, and ``clock_ms`` a clock replacing Redis' own time
    in the scripts (tests drive the host state machine with them).
    """

    def __init__(self, client: redis.Redis, *, fleet_limit: int, host_limit: int,
                 lease_ms: int = LEASE_MS, breaker_failures: int = 10,
                 breaker_base_ms: int = host_state.BREAKER_BASE_MS,
                 breaker_max_ms: int = host_state.BREAKER_MAX_MS,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.redis = client
        self.fleet_limit = fleet_limit
        self.host_limit = host_limit
        self.lease_ms = lease_ms
        self.breaker_failures = breaker_failures
        self.breaker_base_ms = breaker_base_ms
        self.breaker_max_ms = breaker_max_ms
        self.clock_ms = clock_ms
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._held: dict[str, _Held] = {}  # token -> its host and acquire time
        # Released but not yet sent: token -> (release args, when); each entry is sent by
        # exactly one party (its thread's next acquire, or the flusher), under _lock.
        self._deferred: dict[str, tuple[list[object], float]] = {}
        self._local = threading.local()  # .tokens: this thread's deferred tokens
        self._has_deferred = threading.Event()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        # The latest pause this process has seen per host, as (start, end) on the scripts'
        # clock (Redis' time): a slot granted inside one breaks §17, and is counted.
        self._paused_seen: dict[str, tuple[int, int]] = {}

    fleet_key = f"{PREFIX}:fleet"

    @staticmethod
    def host_key(host: str) -> str:
        return f"{PREFIX}:host:{host}"

    def _now_arg(self) -> int:
        return self.clock_ms() if self.clock_ms is not None else 0

    def try_acquire(self, host: str, *, crawl_delay_ms: int = 0) -> str | None:
        """A slot on ``host`` (its token), or None while a cap is full. Raises
        :class:`HostPaused` while the host is paused or its Crawl-delay has not passed."""
        token = uuid.uuid4().hex
        releasing = self._take_own_deferred()
        args: list[object] = [PREFIX, self._now_arg(), self.lease_ms, self.fleet_limit,
                              self.host_limit, token, host, int(crawl_delay_ms),
                              self.breaker_failures, self.breaker_base_ms, self.breaker_max_ms]
        for _token, release_args in releasing:
            args += release_args[:4]  # deferred ones are "ok"/"none": no pause, no breaker
        try:
            reply = self._acquire(keys=[self.fleet_key, self.host_key(host),
                                        host_state.state_key(host)], args=args)
        except redis.RedisError:
            if releasing:
                self._send_releases([a for _t, a in releasing])  # else their leases expire
            raise
        status = int(reply[0])
        if status == -1:
            wait, reason = int(reply[1]), _text(reply[2]) or "retry_after"
            self._saw_pause(host, int(reply[3]), int(reply[3]) + wait)
            raise HostPaused(host, wait, reason)
        if status == -2:
            raise HostPaused(host, int(reply[1]), "crawl_delay")
        if status == 0:
            return None
        now, until = int(reply[1]), int(reply[2])
        seen_start, seen_end = self._paused_seen.get(host, (0, 0))
        # (Strictly after the seen pause's start: one that began in the same millisecond may
        # have been ordered after this grant by Redis.)
        if now < until or seen_start < now < seen_end:
            # Cannot happen while the script and this process agree; counted if it ever does.
            metrics.REQUESTS_TO_PAUSED_HOSTS.inc()
            log.error("a request to %s starts while the host is paused (read: until %d; seen "
                      "here: %d to %d; now %d)", host, until, seen_start, seen_end, now)
        with self._lock:
            self._held[token] = _Held(host, now)
        self._ensure_renewer()
        return token

    def acquire(self, host: str, *, should_stop: Callable[[], bool] = lambda: False,
                check_every_s: float = 1.0, crawl_delay_ms: int = 0) -> str:
        """Wait for a slot on ``host``; polls with jittered sleeps, asking ``should_stop``
        about once a second. Waiting never counts as a failed attempt. A Crawl-delay wait of
        at most ``LOCAL_WAIT_MAX_MS`` is slept here; a longer one, and a pause, raise
        :class:`HostPaused` for the caller to delay the download instead."""
        delay = 0.005
        next_check = time.monotonic() + check_every_s
        while True:
            try:
                token = self.try_acquire(host, crawl_delay_ms=crawl_delay_ms)
            except HostPaused as paused:
                if paused.reason != "crawl_delay" or paused.wait_ms > LOCAL_WAIT_MAX_MS:
                    raise
                if should_stop():
                    raise SlotWaitCancelled(host) from None
                time.sleep(paused.wait_ms / 1000)
                continue
            if token:
                return token
            if time.monotonic() >= next_check:
                if should_stop():
                    raise SlotWaitCancelled(host)
                next_check = time.monotonic() + check_every_s
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    def release(self, token: str, *, defer: bool = False, outcome: str = host_state.NONE,
                pause_ms: int = 0, count_for_breaker: bool = True) -> list[str]:
        """Give the slot back, reporting what its request said about the host
        (:func:`host_state.outcome_of`): at once, or (``defer``) with this thread's next
        acquire, or by the flusher within ``FLUSH_AFTER_S`` if that does not come first.
        A failure or a slow-down is always sent at once (the fleet must see a pause now);
        ``pause_ms`` is the pause a 429/503 asks for. Returns the reasons of the pauses the
        report started (``retry_after``, ``breaker``), which are counted here."""
        with self._lock:
            held = self._held.pop(token, None)
        if held is None:
            return []
        release_args: list[object] = [held.host, token, outcome, held.acquired_at_ms,
                                      int(pause_ms), "1" if count_for_breaker else "0"]
        if not defer or outcome not in (host_state.OK, host_state.NONE):
            return self._send_releases([release_args])
        with self._lock:
            self._deferred[token] = (release_args, time.monotonic())
            self._has_deferred.set()
        tokens = getattr(self._local, "tokens", None)
        if tokens is None:
            tokens = self._local.tokens = []
        tokens.append(token)
        self._ensure_thread("_flusher", self._flush_loop, "caps-flusher")
        return []

    def _take_own_deferred(self) -> list[tuple[str, list[object]]]:
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

    def _send_releases(self, releases: list[list[object]]) -> list[str]:
        args: list[object] = [PREFIX, self._now_arg(), self.host_limit, self.breaker_failures,
                              self.breaker_base_ms, self.breaker_max_ms]
        for release_args in releases:
            args += release_args
        try:
            reply = self._release(keys=[self.fleet_key], args=args)
        except redis.RedisError:  # the leases expire by themselves
            log.warning("could not release %d download slot(s); they expire in %s ms",
                        len(releases), self.lease_ms)
            return []
        started = _text(reply[0]).split()
        if len(releases) == 1:
            until, now = int(reply[1]), int(reply[2])
            if until > now:
                self._saw_pause(str(releases[0][0]), now, until)
        for reason in started:
            metrics.HOST_PAUSES.labels(reason).inc()
            log.warning("host %s paused (%s)", releases[-1][0], reason)
        return started

    def _saw_pause(self, host: str, start_ms: int, end_ms: int) -> None:
        """Remember a pause this process learnt of: the host was paused from ``start_ms``
        (when Redis said so) to ``end_ms``, on the scripts' clock."""
        with self._lock:
            if end_ms > self._paused_seen.get(host, (0, 0))[1]:
                self._paused_seen[host] = (start_ms, end_ms)
            if len(self._paused_seen) > 10_000:
                latest = max(end for _start, end in self._paused_seen.values())
                self._paused_seen = {h: w for h, w in self._paused_seen.items()
                                     if w[1] > latest - 3_600_000}

    def in_use(self, host: str | None = None) -> int:
        key = self.host_key(host) if host else self.fleet_key
        now_ms = int(time.time() * 1000)
        return int(self.redis.zcount(key, now_ms, "+inf"))

    def close(self) -> None:
        """Stop renewing; send every deferred release now."""
        self._stop.set()
        self._has_deferred.set()
        with self._lock:
            due = [args for args, _at in self._deferred.values()]
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
                due_tokens = [token for token, (_args, at) in self._deferred.items()
                              if now - at >= FLUSH_AFTER_S]
                due = [self._deferred.pop(token)[0] for token in due_tokens]
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
            for token, slot in held:
                args += [self.host_key(slot.host), token]
            try:
                self._renew(keys=[self.fleet_key], args=args)
            except redis.RedisError as exc:
                log.warning("could not renew download slots: %s", exc)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")

