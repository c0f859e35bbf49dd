"""Helpers of the politeness tests (contract §17): an in-process pipeline (Rig) whose slot
scripts run on an injected clock, routes that answer a status for a while, message takes."""

from __future__ import annotations

import json
import time

import pytest

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
