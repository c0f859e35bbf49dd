"""``/health``'s cache (api/health.py): results reused for at most CACHE_S, one probe at a time."""

from __future__ import annotations

import threading

from api.health import CACHE_S, CachedChecks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_results_are_reused_until_they_are_five_seconds_old() -> None:
    clock, probes = Clock(), []
    checks = CachedChecks(lambda: probes.append(clock.now) or {"mongodb": f"ok {len(probes)}"},
                          clock=clock)
    assert CACHE_S == 5.0
    assert [checks.get() for _ in range(50)] == [{"mongodb": "ok 1"}] * 50
    clock.now += 4.99
    assert checks.get() == {"mongodb": "ok 1"} and len(probes) == 1
    clock.now += 0.01  # 5 s after the probe started: too old
    assert checks.get() == {"mongodb": "ok 2"} and probes == [1000.0, 1005.0]


def test_age_counts_from_the_start_of_a_slow_probe() -> None:
    clock = Clock()

    def slow_probe() -> dict[str, str]:
        clock.now += 1.5  # a probe that ran into its timeout
        return {"redis": "error: unreachable"}

    checks = CachedChecks(slow_probe, clock=clock)
    checks.get()
    clock.now += 3.5  # 5 s after the probe started, 3.5 s after it ended
    calls = []
    checks._probe = lambda: calls.append(1) or {"redis": "ok"}
    assert checks.get() == {"redis": "ok"} and calls == [1]


def test_concurrent_callers_share_one_probe() -> None:
    started, release, probes = threading.Event(), threading.Event(), []

    def probe() -> dict[str, str]:
        probes.append(1)
        started.set()
        release.wait(5)
        return {"storage": "ok"}

    checks = CachedChecks(probe)
    results: list[dict[str, str]] = []
    threads = [threading.Thread(target=lambda: results.append(checks.get())) for _ in range(8)]
    threads[0].start()
    assert started.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert probes == [1] and results == [{"storage": "ok"}] * 8


def test_expire_makes_the_next_call_probe() -> None:
    probes = []
    checks = CachedChecks(lambda: probes.append(1) or {"mongodb": "ok"})
    checks.get()
    checks.expire()
    checks.get()
    assert len(probes) == 2
