"""Host politeness state (contract §17) in the real Redis: pauses, AIMD cap, circuit breaker,
Crawl-delay, and one round trip per acquire. The scripts run on an injected clock, so no test
waits for a pause to pass; a property test drives random request histories through the Lua
and checks every step against a plain Python model of the rules."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from images_service import metrics
from images_service.download import host_state
from images_service.download.caps import DownloadCaps, HostPaused
from images_service.download.host_state import FAIL, NONE, OK, SLOW, SLOW_FAIL

T0 = 1_800_000_000_000  # the injected clock's start (ms)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def _caps(redis_url: str, clock: Clock, **kw) -> DownloadCaps:
    options = {"fleet_limit": 100, "host_limit": 4, "breaker_failures": 3,
               "breaker_base_ms": 1000, "breaker_max_ms": 8000, "lease_ms": 10**9}
    options.update(kw)
    return DownloadCaps(redis.Redis.from_url(redis_url), clock_ms=clock, **options)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _held(caps: DownloadCaps, n: int, host: str = "h") -> list[str]:
    tokens = [caps.try_acquire(host) for _ in range(n)]
    assert all(tokens), tokens
    return tokens


def test_a_429_pauses_the_host_for_every_process_and_halves_its_cap(redis_url, clock):
    a, b = _caps(redis_url, clock), _caps(redis_url, clock)  # two worker processes
    try:
        first, *others = _held(a, 4)
        assert a.release(first, outcome=SLOW, pause_ms=2000) == ["retry_after"]
        for caps in (a, b):
            with pytest.raises(HostPaused) as paused:
                caps.try_acquire("h")
            assert (paused.value.wait_ms, paused.value.reason) == (2000, "retry_after")
        assert b.try_acquire("other-host")  # other hosts go on
        clock.now += 1999
        with pytest.raises(HostPaused):
            b.try_acquire("h")
        # the requests in flight when it started finish; a 429 among them extends the pause
        # but does not halve the cap again
        assert a.release(others[0], outcome=SLOW, pause_ms=5000) == []
        for token in others[1:]:
            a.release(token, outcome=OK)
        clock.now = T0 + 1999 + 5000
        assert host_state.read_state(a.redis, "h")["cap"] == "2"
        assert _held(b, 2) and b.try_acquire("h") is None  # cap 4 halved to 2
    finally:
        a.close()
        b.close()


def test_the_cap_halves_once_per_pause_down_to_one_and_grows_back_after_20_successes(
        redis_url, clock):
    caps = _caps(redis_url, clock, host_limit=8)
    try:
        for cap in (4, 2, 1, 1):
            (token,) = _held(caps, 1)
            caps.release(token, outcome=SLOW, pause_ms=100)
            clock.now += 100
            assert host_state.read_state(caps.redis, "h")["cap"] == str(cap)
        for cap in (2, 3):
            for _ in range(20):
                caps.release(caps.try_acquire("h"), outcome=OK)
            assert host_state.read_state(caps.redis, "h")["cap"] == str(cap)
        tokens = _held(caps, 3)
        assert caps.try_acquire("h") is None
        # a failure in between restarts the count
        for _ in range(19):
            caps.release(caps.try_acquire("h") or tokens.pop(), outcome=OK)
        (token,) = [t for t in [caps.try_acquire("h")] if t] or [tokens.pop()]
        caps.release(token, outcome=FAIL)
        caps.release(caps.try_acquire("h"), outcome=OK)
        assert host_state.read_state(caps.redis, "h")["cap"] == "3"
    finally:
        caps.close()


def test_the_breaker_trips_doubles_up_to_its_ceiling_and_one_success_closes_it(
        redis_url, clock):
    caps = _caps(redis_url, clock)  # 3 failures; 1 s doubling to 8 s
    try:
        in_flight = caps.try_acquire("h")
        for _ in range(2):
            assert caps.release(caps.try_acquire("h"), outcome=FAIL) == []
        assert caps.release(caps.try_acquire("h"), outcome=FAIL) == ["breaker"]
        with pytest.raises(HostPaused) as paused:
            caps.try_acquire("h")
        assert (paused.value.wait_ms, paused.value.reason) == (1000, "breaker")
        assert caps.release(in_flight, outcome=FAIL) == []  # in flight when it tripped
        for expected in (2000, 4000, 8000, 8000):
            clock.now += 10_000
            # half-open: the first failure after the pause trips it again, for twice as long
            assert caps.release(caps.try_acquire("h"), outcome=FAIL) == ["breaker"]
            with pytest.raises(HostPaused) as paused:
                caps.try_acquire("h")
            assert paused.value.wait_ms == expected
        clock.now += 10_000
        caps.release(caps.try_acquire("h"), outcome=OK)  # closes it
        clock.now += 1
        for _ in range(2):
            assert caps.release(caps.try_acquire("h"), outcome=FAIL) == []
        assert caps.release(caps.try_acquire("h"), outcome=FAIL) == ["breaker"]
        with pytest.raises(HostPaused) as paused:
            caps.try_acquire("h")
        assert paused.value.wait_ms == 1000  # back to the first duration
    finally:
        caps.close()


def test_a_503_is_a_slow_down_and_a_breaker_failure_a_robots_fetch_only_a_slow_down(
        redis_url, clock):
    caps = _caps(redis_url, clock, breaker_failures=2)
    try:
        assert caps.release(caps.try_acquire("h"), outcome=SLOW_FAIL, pause_ms=500) == [
            "retry_after"]
        clock.now += 500
        assert caps.release(caps.try_acquire("h"), outcome=SLOW_FAIL,
                            pause_ms=500) == ["retry_after", "breaker"]
        assert host_state.read_state(caps.redis, "h")["why"] == "breaker"
        clock.now += 1000
        caps.release(caps.try_acquire("h"), outcome=OK)
        for _ in range(3):
            caps.release(caps.try_acquire("h"), outcome=SLOW_FAIL, pause_ms=10,
                         count_for_breaker=False)
            clock.now += 10
        assert host_state.read_state(caps.redis, "h")["fails"] == "0"
        caps.release(caps.try_acquire("h"), outcome=NONE)
        assert caps.in_use("h") == 0
    finally:
        caps.close()


def test_crawl_delay_spaces_request_starts_and_spreads_the_waiters(redis_url, clock):
    caps = _caps(redis_url, clock)
    try:
        first = caps.try_acquire("h", crawl_delay_ms=2000)
        waits = []
        for _ in range(3):
            with pytest.raises(HostPaused) as paused:
                caps.try_acquire("h", crawl_delay_ms=2000)
            assert paused.value.reason == "crawl_delay"
            waits.append(paused.value.wait_ms)
        assert waits == [2000, 4000, 6000]
        caps.release(first, outcome=OK)
        clock.now += 2000
        assert caps.try_acquire("h", crawl_delay_ms=2000)
        assert caps.try_acquire("other", crawl_delay_ms=2000)  # per host
    finally:
        caps.close()


class CountingRedis(redis.Redis):
    """Counts the commands sent (each one a round trip: no pipelines here)."""

    commands = 0

    def execute_command(self, *args, **options):
        type(self).commands += 1
        return super().execute_command(*args, **options)


def test_an_image_costs_one_round_trip_with_the_host_state(redis_url):
    caps = DownloadCaps(CountingRedis.from_url(redis_url), fleet_limit=10, host_limit=4,
                        breaker_failures=3)
    try:
        caps.release(caps.try_acquire("h", crawl_delay_ms=1), defer=True, outcome=OK)  # warm
        CountingRedis.commands = 0
        for _ in range(50):  # acquire, download, release: the release rides on the next one
            token = caps.acquire("h")
            caps.release(token, defer=True, outcome=OK)
        assert CountingRedis.commands == 50
        # every success but the last one (still riding) reached the host's state
        assert host_state.read_state(caps.redis, "h")["streak"] == str(50 % 20)
    finally:
        caps.close()


def test_the_invariant_counter_counts_a_request_this_process_knows_to_be_paused(redis_url,
                                                                                 clock):
    caps = _caps(redis_url, clock)
    try:
        caps.release(caps.try_acquire("h"), outcome=SLOW, pause_ms=60_000)
        before = metrics.REQUESTS_TO_PAUSED_HOSTS._value.get()
        caps.redis.delete(host_state.state_key("h"))  # a script that forgot the pause
        clock.now += 1
        assert caps.try_acquire("h")
        assert metrics.REQUESTS_TO_PAUSED_HOSTS._value.get() == before + 1
    finally:
        caps.close()


# --- the state machine against a model of the rules ------------------------------------------


@dataclass
class Model:
    """The rules of contract §17 as plain Python (the reference for the Lua)."""

    host_max: int
    nfail: int
    base_ms: int
    max_ms: int
    until: int = 0
    cap: int = 0
    streak: int = 0
    fails: int = 0
    level: int = 0
    trip: int = 0

    def __post_init__(self) -> None:
        self.cap = self.host_max

    def finish(self, outcome: str, at: int, now: int, pause_ms: int) -> list[str]:
        started = []
        if outcome == OK:
            self.streak += 1
            if self.streak >= host_state.SUCCESSES_TO_GROW:
                self.cap = min(self.host_max, self.cap + 1)
                self.streak = 0
            if at > self.trip:
                self.fails = self.level = 0
            return started
        self.streak = 0
        if outcome in (SLOW, SLOW_FAIL):
            if now >= self.until:
                self.until = now + pause_ms
                self.cap = max(1, self.cap // 2)
                started.append("retry_after")
            else:
                self.until = max(self.until, now + pause_ms)
        if outcome in (FAIL, SLOW_FAIL) and at > self.trip:
            self.fails += 1
            if self.fails >= self.nfail:
                duration = min(self.base_ms * 2 ** self.level, self.max_ms)
                self.level += 1
                self.trip = now
                self.until = max(self.until, now + duration)
                started.append("breaker")
        return started


OPS = st.one_of(
    st.tuples(st.just("acquire")),
    st.tuples(st.just("finish"), st.integers(0, 7), st.sampled_from([OK, OK, OK, FAIL, SLOW,
                                                                       SLOW_FAIL]),
              st.integers(1, 3000)),
    st.tuples(st.just("tick"), st.integers(1, 5000)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=60))
def test_the_lua_state_machine_follows_the_rules(redis_url, ops) -> None:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{host_state.PREFIX}:*"):
        client.delete(key)
    clock = Clock()
    caps = _caps(redis_url, clock)
    model = Model(host_max=4, nfail=3, base_ms=1000, max_ms=8000)
    held: list[tuple[str, int]] = []  # token, acquired at
    try:
        for op in ops:
            if op[0] == "tick":
                clock.now += op[1]
            elif op[0] == "acquire":
                try:
                    token = caps.try_acquire("h")
                except HostPaused as paused:
                    assert clock.now < model.until
                    assert paused.wait_ms == model.until - clock.now
                    continue
                assert clock.now >= model.until
                if token is None:
                    assert len(held) >= model.cap
                else:
                    assert len(held) < model.cap
                    held.append((token, clock.now))
            elif held:
                token, at = held.pop(op[1] % len(held))
                started = caps.release(token, outcome=op[2], pause_ms=op[3])
                assert started == model.finish(op[2], at, clock.now, op[3])
            state = host_state.read_state(client, "h")
            if state:
                assert 1 <= int(state["cap"]) <= model.host_max
                assert (int(state["cap"]), int(float(state["until"])), int(state["fails"]),
                        int(state["level"])) == (model.cap, model.until, model.fails,
                                                 model.level)
    finally:
        caps.close()
