"""Fleet-wide state of each image host (contract §17), kept in Redis beside the download slots.

One hash per host (``isv:caps:hs:<host>``, "host" as §10 defines it: lower-cased, no port):

=========  ===================================================================================
``until``  paused until this time (Redis server milliseconds): no request to the host starts
           before it; ``from`` and ``why`` (``retry_after`` | ``breaker``) say since when, why
``cap``    the host's current concurrency cap (AIMD): halved (down to 1) once per pause,
           raised by one after every ``SUCCESSES_TO_GROW`` successes in a row (``streak``)
           up to ``MAX_CONCURRENT_PER_DOMAIN``
``fails``  consecutive timeouts, connection errors and 5xx (circuit breaker); ``level``: trips
           since the breaker last closed; ``trip``: when it last tripped
``next``   Crawl-delay: the earliest start of the next request; ``hint``: where the next
           waiter is told to come back, so waiters are spread one delay apart
=========  ===================================================================================

plus a sorted set of paused hosts (``isv:caps:paused``, score: until) for the console and the
paused-hosts gauge. The state is read and enforced by the slot acquisition itself
(:mod:`images_service.download.caps`): the transitions below are Lua that runs inside the
acquire and release scripts, so taking a slot, checking the host's pause, cap and Crawl-delay
and reporting the previous request's success cost one Redis round trip together.

Transitions of one finished request (``apply``), given its outcome (:func:`outcome_of`):

* ``ok`` (the host answered, whatever it said that is not below): ``streak`` + 1, and every
  20th in a row raises ``cap`` by one; the breaker closes (``fails`` and ``level`` 0) —
  unless the request was acquired before the breaker's last trip (then it was in flight when
  it tripped, and does not count).
* ``slow`` (429) and ``slow_fail`` (503): a pause of the Retry-After (capped) or the §8 backoff,
  given by the caller. If the host is not paused, a pause starts and ``cap`` is halved; if it
  is (a request that was in flight when the pause began), the pause is only extended.
* ``fail`` (timeout, connection error, 5xx) and ``slow_fail``: ``fails`` + 1, unless the request
  was in flight when the breaker last tripped; at ``HOST_BREAKER_FAILURES`` the breaker
  trips: a pause of 30 s × 2^level, at most one hour. ``fails`` is not reset by a trip, only by
  a success: after its pause the breaker is half-open, and the first counted failure trips it
  again (for twice as long) while one success closes it.
* ``none``: no request reached the host (refused address, bad URL, robots.txt fetches): only
  the slot is given back.

The state expires an hour after its last change (or its pause's end): a host idle that long
starts again at full concurrency with a closed breaker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import redis

from images_service.errors import DownloadError, StorageUnavailable

PREFIX = "isv:caps"
PAUSED_KEY = f"{PREFIX}:paused"
#: Successes in a row that raise a host's cap by one.
SUCCESSES_TO_GROW = 20
#: The breaker's first pause and its ceiling (milliseconds); doubled per trip in between.
BREAKER_BASE_MS = 30_000
BREAKER_MAX_MS = 3_600_000
#: A host's state is kept this long after its last change or the end of its pause.
IDLE_TTL_MS = 3_600_000

OK, FAIL, SLOW, SLOW_FAIL, NONE = "ok", "fail", "slow", "slow_fail", "none"
#: Reasons a pause starts (``images_host_pauses_total{reason}``).
PAUSE_REASONS = ("retry_after", "breaker")


def state_key(host: str) -> str:
    return f"{PREFIX}:hs:{host}"


def outcome_of(error: BaseException | None) -> str:
    """What a finished request says about its host (see the module docstring)."""
    if error is None or isinstance(error, StorageUnavailable):
        return OK  # an image stored, or one the host sent that our storage could not take
    if not isinstance(error, DownloadError):
        return NONE  # the fetch wraps whatever it raises: this came from elsewhere
    status = error.http_status
    if error.code.startswith("http_") and status is not None:
        if status == 429:
            return SLOW
        if status == 503:
            return SLOW_FAIL
        return FAIL if status >= 500 else OK
    if error.code in ("timeout", "connection_error"):
        return FAIL
    if error.code in ("blocked_address", "invalid_url", "robots_disallowed"):
        return NONE  # refused before any connection
    return OK  # the host answered: too_large, not_an_image, opted_out, redirects…


#: Lua shared by the caps scripts. ``apply`` changes one host's state for one finished request
#: and returns the reasons of the pauses it started ("", "retry_after", "breaker" or both).
LUA = r"""
local function num(v, d)
  v = tonumber(v)
  if v == nil then return d end
  return v
end

local function clock(override)
  override = tonumber(override)
  if override and override > 0 then return override end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function apply(prefix, host, outcome, at, now, pause_ms, count_breaker, host_max, nfail,
                     base_ms, max_ms)
  if outcome == 'none' then return '' end
  local hs = prefix .. ':hs:' .. host
  local s = redis.call('HMGET', hs, 'until', 'cap', 'streak', 'fails', 'level', 'trip', 'why')
  local untl, cap = num(s[1], 0), math.min(num(s[2], host_max), host_max)
  local streak, fails, level, trip = num(s[3], 0), num(s[4], 0), num(s[5], 0), num(s[6], 0)
  local why = s[7]
  local from = nil
  local started = ''
  local current = at > trip  -- not in flight when the breaker last tripped (acquired after)
  if outcome == 'ok' then
    streak = streak + 1
    if streak >= SUCCESSES_TO_GROW then
      if cap < host_max then cap = cap + 1 end
      streak = 0
    end
    if current then fails = 0; level = 0 end
  else
    streak = 0
    if outcome == 'slow' or outcome == 'slow_fail' then
      if now >= untl then
        untl = now + pause_ms
        from = now
        why = 'retry_after'
        cap = math.max(1, math.floor(cap / 2))
        started = 'retry_after'
      elseif now + pause_ms > untl then
        untl = now + pause_ms
      end
    end
    if (outcome == 'fail' or outcome == 'slow_fail') and current and count_breaker == '1' then
      fails = fails + 1
      if fails >= nfail then
        local duration = math.min(base_ms * math.pow(2, math.min(level, 40)), max_ms)
        level = level + 1
        trip = now
        if now >= untl then from = now end
        if now + duration > untl then untl = now + duration; why = 'breaker' end
        started = started .. ' breaker'
      end
    end
  end
  redis.call('HSET', hs, 'until', untl, 'cap', cap, 'streak', streak, 'fails', fails,
             'level', level, 'trip', trip, 'why', why or '')
  if from then redis.call('HSET', hs, 'from', from) end
  redis.call('PEXPIRE', hs, math.max(untl - now, 0) + IDLE_TTL_MS)
  if untl > now then
    redis.call('ZADD', prefix .. ':paused', untl, host)
  end
  return started
end
""".replace("SUCCESSES_TO_GROW", str(SUCCESSES_TO_GROW)).replace("IDLE_TTL_MS", str(IDLE_TTL_MS))


@dataclass(frozen=True)
class PausedHost:
    """A host no request may start to until ``until_ms`` (Unix milliseconds)."""

    host: str
    until_ms: int
    since_ms: int
    reason: str  #: retry_after | breaker
    cap: int | None  #: its concurrency cap now (None: the full MAX_CONCURRENT_PER_DOMAIN)

    @property
    def until_iso(self) -> str:
        return datetime.fromtimestamp(self.until_ms / 1000, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")


def paused_hosts(client: redis.Redis, *, limit: int = 100) -> list[PausedHost]:
    """Hosts paused now, the longest pause first (console, metrics)."""
    now_ms = int(time.time() * 1000)
    client.zremrangebyscore(PAUSED_KEY, "-inf", now_ms)
    hosts = client.zrevrangebyscore(PAUSED_KEY, "+inf", now_ms, start=0, num=limit,
                                    withscores=True)
    found = []
    for raw, score in hosts:
        host = raw.decode() if isinstance(raw, bytes) else str(raw)
        since, why, cap = client.hmget(state_key(host), "from", "why", "cap")
        found.append(PausedHost(
            host=host, until_ms=int(score), since_ms=int(float(since or 0)),
            reason=(why or b"").decode() or "retry_after",
            cap=int(float(cap)) if cap is not None else None))
    return found


def count_paused(client: redis.Redis) -> int:
    """How many hosts are paused now (the ``images_paused_hosts`` gauge)."""
    return int(client.zcount(PAUSED_KEY, int(time.time() * 1000), "+inf"))


def read_state(client: redis.Redis, host: str) -> dict[str, str]:
    """A host's raw state (tests, debugging)."""
    return {k.decode(): v.decode() for k, v in client.hgetall(state_key(host)).items()}
