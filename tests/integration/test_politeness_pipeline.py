"""Contract §17 on the real pipeline, driven step by step: fleet-wide pauses on 429/503, the
adaptive cap, the circuit breaker.

The pipeline runs in this process on the real servers (nx-27017, Redis, a loopback image
server); messages are taken from the broker and handed to the steps by the test. The slot
scripts run on an injected clock, so a 30 s breaker pause passes without waiting for it.
"""

from __future__ import annotations

import json
import time

import pytest

from images_service import metrics
from images_service.download import host_state
from images_service.download.caps import DownloadCaps
from images_service.queueing.messages import RETRY_ACTOR
from tests.support.image_server import make_image
from tests.support.pipeline import Rig, source_db

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def make_rig(make_settings, image_server, **env: str) -> Rig:
    values = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
              "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "60000",
              "MAX_CONCURRENT_DOWNLOADS": "20"}
    values.update(env)
    settings = make_settings(values)
    source_db(settings).hotels.drop()
    return Rig(settings, image_server)


def use_clock(rig: Rig) -> Clock:
    """Slot scripts on an injected clock (leases that never expire on it)."""
    clock = Clock()
    ctx = rig.pipeline.ctx
    ctx.caps.close()
    ctx.caps = DownloadCaps(ctx.redis, fleet_limit=ctx.settings.max_concurrent_downloads,
                            host_limit=ctx.settings.max_concurrent_per_domain,
                            breaker_failures=ctx.settings.host_breaker_failures,
                            lease_ms=10**9, clock_ms=clock)
    return clock


class Switch:
    """A route answering ``status`` (with ``headers``) for its first ``times`` requests
    (``times`` None: while ``status`` is set), then an image per path."""

    def __init__(self, status: int | None, headers: dict[str, str] | None = None,
                 times: int | None = None) -> None:
        self.status, self.headers, self.times, self.count = status, headers or {}, times, 0

    def __call__(self, req, query) -> None:
        self.count += 1
        failing = self.status is not None and (self.times is None or self.count <= self.times)
        if failing:
            req.respond(self.status, b"slow down", {"Content-Type": "text/plain", **self.headers})
        else:
            req.respond(200, make_image("JPEG", seed=len(req.path)),
                        {"Content-Type": "image/jpeg"})


def job_with(rig: Rig, doc_id: str, paths: list[str]) -> tuple[str, list[dict]]:
    rig.db.hotels.insert_one({"_id": doc_id, "name": doc_id,
                              "images": [rig.server.url(p) for p in paths]})
    return rig.document_job(doc_id)


def retries(rig: Rig, job_id: str) -> list[tuple[list, int]]:
    return sorted(rig.take_messages(RETRY_ACTOR, job_id), key=lambda m: m[0][2])


def metadata(rig: Rig, doc_id: str) -> dict:
    path = rig.settings.storage_path / f"serpy_db/hotels/{doc_id}-{doc_id}/metadata.json"
    return json.loads(path.read_text())


def state_is(rig: Rig, **expected: str) -> None:
    """Wait (briefly) for the host's state to show ``expected``: successes are reported with
    a deferred release, sent within FLUSH_AFTER_S."""
    deadline = time.monotonic() + 2
    while True:
        state = host_state.read_state(rig.redis, "127.0.0.1")
        if all(state.get(k) == v for k, v in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert {k: state.get(k) for k in expected} == expected


@pytest.fixture
def rigs():
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def test_a_429_pauses_its_host_and_the_waiting_images_are_delayed_without_spending_a_retry(
        make_settings, image_server, rigs):
    # Given one slot per host, and a host whose first answer is 429 with Retry-After: 2
    rig = make_rig(make_settings, image_server, MAX_CONCURRENT_PER_DOMAIN="1")
    rigs.append(rig)
    clock = use_clock(rig)
    image_server.add_route("/p/", Switch(429, {"Retry-After": "2"}, times=1), prefix=True)
    job_id, plans = job_with(rig, "paused", [f"/p/{n}.jpg" for n in range(4)])
    pauses = metrics.HOST_PAUSES.labels("retry_after")._value.get()

    # When the document's first attempts run
    rig.pipeline.download_documents(job_id, plans)

    # Then one request reached the host (its 429); the three others wait for the pause as
    # delayed messages of their first attempt; the 429's image spends its retry
    assert image_server.hits() == 1
    assert metrics.HOST_PAUSES.labels("retry_after")._value.get() == pauses + 1
    messages = retries(rig, job_id)
    assert sorted(args[3] for args, _eta in messages) == [1, 1, 1, 2]
    now_ms = time.time() * 1000
    for args, eta in messages:
        assert 1900 <= eta - now_ms <= 2300, (args[2], eta - now_ms)
    state = host_state.read_state(rig.redis, "127.0.0.1")
    assert state["why"] == "retry_after" and int(float(state["until"])) == T0 + 2000

    # When the delayed images come back before the pause is over, they are delayed again:
    # still no request, still their first attempt
    for args, _eta in messages:
        if args[3] == 1:
            rig.pipeline.retry_image(*args)
    assert image_server.hits() == 1
    again = retries(rig, job_id)
    assert [args[3] for args, _eta in again] == [1, 1, 1]

    # When the pause is over, every image is downloaded; only the 429's image used 2 attempts
    clock.now += 2000
    for args, _eta in again + [m for m in messages if m[0][3] == 2]:
        rig.pipeline.retry_image(*args)
    job = rig.job(job_id)
    assert job["status"] == "completed"
    assert job["progress"]["images_downloaded"] == 4 and job["progress"]["documents_done"] == 1
    attempts = sorted(r["attempts"] for r in metadata(rig, "paused")["images"])
    assert attempts == [1, 1, 1, 2]
    assert image_server.hits() == 5
    assert metrics.REQUESTS_TO_PAUSED_HOSTS._value.get() == 0


def test_the_cap_halves_on_a_429_and_grows_back_by_one_per_20_successes(
        make_settings, image_server, rigs):
    rig = make_rig(make_settings, image_server, MAX_CONCURRENT_PER_DOMAIN="4")
    rigs.append(rig)
    clock = use_clock(rig)
    image_server.add_route("/first/", Switch(429, {"Retry-After": "1"}, times=1), prefix=True)
    job_id, plans = job_with(rig, "first", ["/first/a.jpg"])
    rig.pipeline.download_documents(job_id, plans)
    assert host_state.read_state(rig.redis, "127.0.0.1")["cap"] == "2"
    clock.now += 1000

    seen = []
    for batch in range(3):  # 20 images each, every answer taking 60 ms
        image_server.reset()
        image_server.delay_s = 0.06
        job_id, plans = job_with(rig, f"batch{batch}", [f"/image/JPEG/{batch}-{n}"
                                                         for n in range(20)])
        rig.pipeline.download_documents(job_id, plans)
        assert rig.job(job_id)["progress"]["images_downloaded"] == 20
        seen.append(image_server.max_concurrency("127.0.0.1"))
        state_is(rig, cap=str(min(4, 3 + batch)))  # the last success rides on a release
    assert seen == [2, 3, 4]


def test_the_breaker_trips_doubles_and_one_success_closes_it(make_settings, image_server,
                                                             rigs):
    rig = make_rig(make_settings, image_server, MAX_CONCURRENT_PER_DOMAIN="1",
                   HOST_BREAKER_FAILURES="3")
    rigs.append(rig)
    clock = use_clock(rig)
    host = Switch(500)
    image_server.add_route("/b/", host, prefix=True)
    trips = metrics.HOST_PAUSES.labels("breaker")._value.get()

    # Three 500s in a row trip the breaker: the two images left wait 30 s, unattempted
    job_id, plans = job_with(rig, "breaker", [f"/b/{n}.jpg" for n in range(5)])
    rig.pipeline.download_documents(job_id, plans)
    assert image_server.hits() == 3
    assert metrics.HOST_PAUSES.labels("breaker")._value.get() == trips + 1
    messages = retries(rig, job_id)
    assert sorted(args[3] for args, _eta in messages) == [1, 1, 2, 2, 2]
    now_ms = time.time() * 1000
    assert all(29_900 <= eta - now_ms <= 31_100 for args, eta in messages if args[3] == 1)
    failed_retries = [args for args, _eta in messages if args[3] == 2]
    waiting = [args for args, _eta in messages if args[3] == 1]

    # After the pause the breaker is half-open: one more failure trips it for twice as long
    clock.now += 30_000
    rig.pipeline.retry_image(*failed_retries.pop())
    assert image_server.hits() == 4
    assert metrics.HOST_PAUSES.labels("breaker")._value.get() == trips + 2
    rig.pipeline.retry_image(*waiting[0])
    ((args, eta),) = [m for m in retries(rig, job_id) if m[0][2] == waiting[0][2]]
    assert args[3] == 1 and 59_900 <= eta - time.time() * 1000 <= 62_100
    assert image_server.hits() == 4

    # One success closes it: the next trip needs three failures again and lasts 30 s
    clock.now += 60_000
    host.status = None
    rig.pipeline.retry_image(*waiting[1])
    assert image_server.hits() == 5
    state_is(rig, fails="0", level="0")  # (a success rides on a deferred release)
    host.status = 500
    for args in failed_retries:  # two failures: not yet
        rig.pipeline.retry_image(*args)
    assert metrics.HOST_PAUSES.labels("breaker")._value.get() == trips + 2
    job2, plans2 = job_with(rig, "breaker2", ["/b/x.jpg", "/b/y.jpg"])
    rig.pipeline.download_documents(job2, plans2)
    assert metrics.HOST_PAUSES.labels("breaker")._value.get() == trips + 3
    assert int(float(host_state.read_state(rig.redis, "127.0.0.1")["until"])) == \
        clock.now + 30_000
