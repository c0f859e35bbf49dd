"""Paused hosts (contract §17) where an operator looks: the console's queues page and the
worker's ``images_paused_hosts`` gauge, read from the fleet's state in Redis."""

from __future__ import annotations

import time

import redis

from api import create_app
from images_service import metrics
from images_service.download import host_state
from images_service.download.caps import DownloadCaps
from tests.support.console import csrf_token
from tests.support.pipeline import KEY
from workers.queue_metrics import sample_once


def _pause(client: redis.Redis, host: str, outcome: str, pause_ms: int, failures: int = 1):
    caps = DownloadCaps(client, fleet_limit=10, host_limit=4, breaker_failures=failures)
    try:
        caps.release(caps.try_acquire(host), outcome=outcome, pause_ms=pause_ms)
    finally:
        caps.close()


def test_the_queues_page_lists_paused_hosts_with_until_when_and_why(make_settings):
    settings = make_settings()
    client = redis.Redis.from_url(settings.redis_url)
    app = create_app(settings)
    browser = app.test_client()
    token = csrf_token(browser.get("/ui/sign-in").text)
    browser.post("/ui/sign-in", data={"csrf_token": token, "api_key": KEY})
    assert "No host is paused." in browser.get("/ui/queues").text

    _pause(client, "cdn.example.com", host_state.SLOW, 120_000)
    _pause(client, "img.example.org", host_state.FAIL, 0)  # one failure trips it here
    page = browser.get("/ui/queues").text

    assert "cdn.example.com" in page and "img.example.org" in page
    assert "asked to slow down (429/503)" in page and "circuit breaker" in page
    until = host_state.paused_hosts(client)[0]
    assert until.host == "cdn.example.com" and until.cap == 2
    assert f'<time datetime="{until.until_iso}">' in page
    assert abs(until.until_ms - (time.time() * 1000 + 120_000)) < 5_000


def test_the_gauge_counts_the_hosts_paused_now(make_settings):
    client = redis.Redis.from_url(make_settings().redis_url)
    sample_once(client)
    assert metrics.PAUSED_HOSTS._value.get() == 0
    _pause(client, "a.example", host_state.SLOW, 60_000)
    _pause(client, "b.example", host_state.SLOW_FAIL, 60_000)
    _pause(client, "c.example", host_state.SLOW, 1)
    time.sleep(0.01)  # c's pause is over
    sample_once(client)
    assert metrics.PAUSED_HOSTS._value.get() == 2
