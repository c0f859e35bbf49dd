"""``GET /health`` answers from results at most 5 s old (contract §14 "Surface"): repeated
calls do not each touch the backends. Probes are counted as the MongoDB pings the health
client really sends (pymongo command monitoring) and the storage probe files really made."""

from __future__ import annotations

import time

from pymongo import MongoClient, monitoring

from api import context as api_context
from api import create_app
from api.health import CACHE_S


class Pings(monitoring.CommandListener):
    def __init__(self) -> None:
        self.at: list[float] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "ping":
            self.at.append(time.monotonic())

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_repeated_calls_share_one_probe_until_it_is_five_seconds_old(make_settings,
                                                                      monkeypatch) -> None:
    # Given an api whose health client's MongoDB commands are watched
    pings = Pings()
    real = api_context.mongo_client

    def watched(settings, *, timeout_ms: int = 5000, app: str = "images-service"):
        if app != "images-service-health":
            return real(settings, timeout_ms=timeout_ms, app=app)
        return MongoClient(settings.mongodb_uri, appname=app, serverSelectionTimeoutMS=timeout_ms,
                           event_listeners=[pings])

    monkeypatch.setattr(api_context, "mongo_client", watched)
    settings = make_settings()
    client = create_app(settings).test_client()
    probe_files = []
    storage = client.application.extensions[api_context.EXTENSION_KEY].health_storage
    real_check = storage.check
    monkeypatch.setattr(storage, "check", lambda: probe_files.append(1) or real_check())

    # When /health is called 50 times in a row
    answers = [client.get("/api/v1/health") for _ in range(50)]

    # Then every call answered, from one probe of each backend
    assert {(a.status_code, a.json["status"]) for a in answers} == {(200, "ok")}
    assert len(pings.at) == 1 and len(probe_files) == 1

    # And once the result is CACHE_S old, the next call probes again (once)
    deadline = pings.at[0] + CACHE_S + 3
    while len(pings.at) < 2 and time.monotonic() < deadline:
        assert client.get("/health").status_code == 200
        time.sleep(0.25)  # the age is time itself: nothing to await
    assert len(pings.at) == 2 and len(probe_files) == 2
    # (A ping is seen when it reaches the server: the first probe also paid the connection's
    # set-up, up to 0.1 s here, which the pooled second one did not.)
    assert CACHE_S - 0.1 <= pings.at[1] - pings.at[0] < CACHE_S + 1
