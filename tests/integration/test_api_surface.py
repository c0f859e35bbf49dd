"""Contract §14 "Surface" on the api and the console, without a browser (real Redis, nx-27017):
the failed-key budget throttles (the right key included), ``TRUSTED_PROXIES``, the console's
own request budget with its HTML 429 page, and the console's security headers."""

from __future__ import annotations

import time

import pytest

from api import create_app
from tests.support.console import csrf_token
from tests.support.pipeline import KEY

BUDGET = 20  #: FAILED_AUTH_LIMIT's default, the contract's number


def _client(app, address: str = "127.0.0.1"):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _fail(client, times: int, **headers: str) -> list[int]:
    return [client.get("/api/v1/jobs", headers={"X-API-Key": f"guess-{i:08d}", **headers})
            .status_code for i in range(times)]


def _sign_in(client, key: str = KEY):
    token = csrf_token(client.get("/ui/sign-in").text)
    return client.post("/ui/sign-in", data={"csrf_token": token, "api_key": key})


# --- the failed-key budget -----------------------------------------------------------------

def test_over_the_failed_key_budget_even_the_right_key_is_refused(make_settings) -> None:
    app = create_app(make_settings())
    guesser = _client(app, "198.51.100.7")
    # Given 20 wrong keys from one address within a minute: each a plain 401
    assert _fail(guesser, BUDGET) == [401] * BUDGET
    # When that address then sends the right key
    refused = guesser.get("/api/v1/jobs", headers={"X-API-Key": KEY})
    # Then it is throttled like any other attempt, not served: guessing gains nothing
    assert refused.status_code == 429
    assert refused.json == {"error": {"code": "rate_limited",
                                      "message": "too many failed authentication attempts"}}
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert guesser.get("/api/v1/jobs").status_code == 429  # no key at all: the same
    # And the console's sign-in from that address refuses the right key too, as HTML
    page = _sign_in(guesser)
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert 0 < int(page.headers["Retry-After"]) <= 60
    assert "images_console" not in page.headers.get("Set-Cookie", "")
    # While another address is served with the right key
    assert _client(app, "198.51.100.8").get("/api/v1/jobs",
                                            headers={"X-API-Key": KEY}).status_code == 200


def test_failed_sign_ins_lock_the_api_key_check_of_that_address(make_settings) -> None:
    app = create_app(make_settings())
    client = _client(app, "198.51.100.9")
    token = csrf_token(client.get("/ui/sign-in").text)
    statuses = [client.post("/ui/sign-in", data={"csrf_token": token, "api_key": f"no-{i:06d}"})
                .status_code for i in range(BUDGET)]
    assert statuses == [401] * BUDGET
    assert client.post("/ui/sign-in", data={"csrf_token": token, "api_key": KEY}).status_code == 429
    assert client.get("/api/v1/jobs", headers={"X-API-Key": KEY}).status_code == 429


def test_the_budget_is_shared_by_every_api_process(make_settings) -> None:
    # Two apps stand for two gunicorn workers (or hosts): one Redis counts for both
    settings = make_settings()
    first, second = create_app(settings), create_app(settings)
    assert _fail(_client(first, "203.0.113.5"), BUDGET // 2) == [401] * (BUDGET // 2)
    assert _fail(_client(second, "203.0.113.5"), BUDGET // 2) == [401] * (BUDGET // 2)
    assert _client(first, "203.0.113.5").get(
        "/api/v1/jobs", headers={"X-API-Key": KEY}).status_code == 429


def test_the_right_key_is_served_again_once_the_window_has_passed(make_settings) -> None:
    client = _client(create_app(make_settings({"FAILED_AUTH_LIMIT": "3/second"})))
    assert _fail(client, 3) == [401] * 3
    refused = client.get("/api/v1/jobs", headers={"X-API-Key": KEY})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    deadline = time.monotonic() + 3
    status = 429
    while status == 429 and time.monotonic() < deadline:
        time.sleep(0.1)  # the window is time itself: nothing to await
        status = client.get("/api/v1/jobs", headers={"X-API-Key": KEY}).status_code
    assert status == 200


# --- TRUSTED_PROXIES -------------------------------------------------------------------------

def test_without_trusted_proxies_x_forwarded_for_is_ignored(make_settings) -> None:
    client = _client(create_app(make_settings()), "10.9.0.1")
    # A guesser cannot escape the budget by inventing a new forwarded address per attempt
    statuses = [client.get("/api/v1/jobs", headers={"X-API-Key": f"guess-{i:08d}",
                                                    "X-Forwarded-For": f"192.0.2.{i}"})
                .status_code for i in range(BUDGET)]
    assert statuses == [401] * BUDGET
    assert client.get("/api/v1/jobs", headers={"X-API-Key": KEY,
                                               "X-Forwarded-For": "192.0.2.200"}).status_code == 429


@pytest.mark.parametrize("proxies,forwarded,client_address", [
    (1, "{spoof}, 192.0.2.10", "192.0.2.10"),
    (2, "{spoof}, 192.0.2.20, 10.0.0.2", "192.0.2.20"),
])
def test_with_trusted_proxies_the_nth_forwarded_address_is_the_client(
        make_settings, proxies, forwarded, client_address) -> None:
    # Given n proxies in front of the api: every request arrives from the last proxy
    app = create_app(make_settings({"TRUSTED_PROXIES": str(proxies)}))
    proxy = _client(app, "10.0.0.1")
    # When one client behind them fails 20 times (spoofing the leftmost entries)
    statuses = [proxy.get("/api/v1/jobs", headers={
        "X-API-Key": f"guess-{i:08d}", "X-Forwarded-For": forwarded.format(spoof=f"1.2.3.{i}")})
        .status_code for i in range(BUDGET)]
    assert statuses == [401] * BUDGET
    # Then that client is throttled, named by the n-th address from the right
    assert proxy.get("/api/v1/jobs", headers={
        "X-API-Key": KEY, "X-Forwarded-For": forwarded.format(spoof="1.2.3.250")}
    ).status_code == 429
    # (with fewer entries than proxies the peer itself is the address: here a proxy, not locked)
    assert proxy.get("/api/v1/jobs", headers={
        "X-API-Key": KEY, "X-Forwarded-For": client_address}).status_code == (
        429 if proxies == 1 else 200)
    # And another client behind the same proxies is served: they no longer share one budget
    other = forwarded.format(spoof="1.2.3.4").replace(client_address, "192.0.2.99")
    assert proxy.get("/api/v1/jobs", headers={"X-API-Key": KEY,
                                              "X-Forwarded-For": other}).status_code == 200


def test_a_keys_budget_spans_every_route(make_settings) -> None:
    # API_RATE_LIMIT is the key's, not each route's: three routes do not triple it
    client = _client(create_app(make_settings({"API_RATE_LIMIT": "3/minute"})))
    statuses = [client.get(path, headers={"X-API-Key": KEY}).status_code
                for path in ("/api/v1/jobs", "/api/v1/openapi.json", "/api/v1/jobs?limit=1",
                             "/api/v1/openapi.json")]
    assert statuses == [200, 200, 200, 429]


# --- the console's own budget ----------------------------------------------------------------

def test_console_requests_never_count_against_the_api_key_limit(make_settings) -> None:
    app = create_app(make_settings({"API_RATE_LIMIT": "3/minute"}))
    browser = _client(app)
    assert _sign_in(browser).status_code == 303
    # A job page with its thumbnails, stylesheet, script and progress polls: far more than 3
    statuses = [browser.get(path).status_code for path in
                ["/ui/", "/ui/queues", "/ui/static/console.css", "/ui/static/console.js",
                 "/ui/progress.json", "/ui/listener"] * 4]
    assert statuses == [200] * 24
    api = _client(app)
    assert [api.get("/api/v1/jobs", headers={"X-API-Key": KEY}).status_code
            for _ in range(4)] == [200, 200, 200, 429]
    assert browser.get("/ui/queues").status_code == 200  # the key's 429 is not the console's


def test_over_its_budget_a_session_gets_an_html_429_page(make_settings) -> None:
    app = create_app(make_settings({"CONSOLE_RATE_LIMIT": "6/minute"}))
    first, second = _client(app), _client(app)
    assert _sign_in(first).status_code == 303 and _sign_in(second).status_code == 303
    # Given a session that used its 6 requests (static files count too)
    statuses = [first.get(path).status_code for path in
                ("/ui/", "/ui/static/console.css", "/ui/queues", "/ui/static/console.js",
                 "/ui/listener", "/ui/progress.json")]
    assert statuses == [200] * 6
    # When it asks for more
    for path in ("/ui/queues", "/ui/static/console.css", "/ui/progress.json"):
        refused = first.get(path)
        # Then it gets the console's HTML error page, with Retry-After
        assert refused.status_code == 429, path
        assert refused.mimetype == "text/html" and "429 · rate_limited" in refused.text
        assert 0 < int(refused.headers["Retry-After"]) <= 60
    # While another session from the same address still has its own budget
    assert second.get("/ui/queues").status_code == 200


def test_requests_without_a_session_are_limited_per_address(make_settings) -> None:
    from api.limits import CONSOLE_ANONYMOUS_LIMIT

    allowed = int(CONSOLE_ANONYMOUS_LIMIT.split("/")[0])
    app = create_app(make_settings())
    anonymous = _client(app, "192.0.2.33")
    statuses = [anonymous.get("/ui/sign-in").status_code for _ in range(allowed)]
    assert statuses == [200] * allowed
    refused = anonymous.get("/ui/static/console.css")
    assert refused.status_code == 429 and refused.mimetype == "text/html"
    assert _client(app, "192.0.2.34").get("/ui/sign-in").status_code == 200


# --- security headers ------------------------------------------------------------------------

def test_every_console_response_carries_the_security_headers(make_settings) -> None:
    app = create_app(make_settings())
    browser = _client(app)
    responses = {"sign-in page": browser.get("/ui/sign-in"),
                 "redirect to sign-in": browser.get("/ui/queues"),
                 "static file": browser.get("/ui/static/console.css"),
                 "refused action": browser.post("/ui/sign-out"),
                 "unknown console path": browser.get("/ui/no-such-page")}
    assert _sign_in(browser).status_code == 303
    responses.update({"page": browser.get("/ui/"), "progress": browser.get("/ui/progress.json"),
                      "missing file": browser.get("/ui/files/serpy_db/x/y/original/img_001.jpg")})
    for what, response in responses.items():
        csp = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, what
        assert response.headers.get("X-Frame-Options") == "DENY", what
        assert response.headers.get("X-Content-Type-Options") == "nosniff", what
    # The JSON API is not a page: it keeps its own headers
    assert "Content-Security-Policy" not in browser.get("/api/v1/health").headers


def test_console_templates_hold_no_inline_script_or_style() -> None:
    import re
    from pathlib import Path

    import api.console

    templates = Path(api.console.__file__).parent / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text()
        # A <script> must name its file; no <style>, style="" or on*="" handler (CSP forbids them)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", text), template
