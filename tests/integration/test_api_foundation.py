"""The api skeleton: auth, JSON error bodies, health, OpenAPI, docs, rate limit, CORS."""

from __future__ import annotations

import re
import time

import pytest

from api import create_app
from images_service.config.settings import SettingsError
from images_service.dev.embedded import start_redis

KEY = "test-key-0123456789"


@pytest.fixture
def client(make_settings):
    app = create_app(make_settings())
    return app.test_client()


def test_production_without_key_refuses_to_start(make_settings) -> None:
    with pytest.raises(SettingsError, match="API_KEY"):
        create_app(make_settings({"API_KEY": ""}, api_keys=()))


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key-000000"}, {"X-API-Key": ""}])
@pytest.mark.parametrize("method,path", [("post", "/api/v1/download/batch"),
                                          ("get", "/api/v1/jobs"),
                                          ("get", "/api/v1/openapi.json"),
                                          ("get", "/api/v1/no-such-route")])
def test_missing_or_wrong_key_is_401_with_error_body(client, method, path, headers) -> None:
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 401
    assert response.json == {"error": {"code": "unauthorized",
                                       "message": "missing or invalid X-API-Key header"}}


def test_rotated_keys_are_all_accepted(make_settings) -> None:
    app = create_app(make_settings({"API_KEY": "", "API_KEYS": "old-key-00000,new-key-11111"}))
    c = app.test_client()
    for key in ("old-key-00000", "new-key-11111"):
        assert c.get("/api/v1/openapi.json", headers={"X-API-Key": key}).status_code == 200
    assert c.get("/api/v1/openapi.json", headers={"X-API-Key": "old-key-0000"}).status_code == 401


def test_key_check_is_constant_time_compare() -> None:
    from api.auth import key_is_valid

    assert key_is_valid("abc-key-1234", ("x-other-key", "abc-key-1234"))
    assert not key_is_valid("abc-key-123", ("abc-key-1234",))
    assert not key_is_valid(None, ("abc-key-1234",))


@pytest.mark.parametrize("method,path,status,code", [
    ("get", "/api/v1/nowhere", 404, "not_found"),
    ("delete", "/api/v1/health", 405, "method_not_allowed"),
    ("post", "/api/v1/openapi.json", 405, "method_not_allowed"),
])
def test_http_errors_have_json_bodies(client, method, path, status, code) -> None:
    response = getattr(client, method)(path, headers={"X-API-Key": KEY})
    assert response.status_code == status
    assert response.is_json and response.json["error"]["code"] == code


def test_unexpected_exception_is_500_json(make_settings) -> None:
    app = create_app(make_settings())

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/api/v1/boom", headers={"X-API-Key": KEY})
    assert response.status_code == 500
    assert response.json == {"error": {"code": "internal_error", "message": "internal server error"}}


def test_health_ok_with_both_backends(client) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok",
                             "checks": {"mongodb": "ok", "redis": "ok", "storage": "ok"}}


def test_health_degraded_when_redis_is_really_stopped(make_settings, own_redis) -> None:
    from api.health import CACHE_S

    app = create_app(make_settings({"REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}))
    c = app.test_client()
    assert c.get("/api/v1/health").status_code == 200
    own_redis.stop()
    # The result of the last probe is served for at most CACHE_S, then the outage shows
    deadline = time.monotonic() + CACHE_S + 2
    while True:
        started = time.monotonic()
        response = c.get("/api/v1/health")
        assert time.monotonic() - started < 5
        if response.status_code != 200 or started > deadline:
            break
        time.sleep(0.2)  # the cache's age is time itself: nothing to await
    assert response.status_code == 503
    assert response.json["status"] == "degraded"
    assert response.json["checks"] == {"mongodb": "ok", "redis": "error: unreachable",
                                       "storage": "ok"}


def test_health_degraded_when_mongodb_is_really_stopped(make_settings, own_mongo) -> None:
    from api.health import EXTENSION_KEY

    app = create_app(make_settings({"MONGODB_URI": f"mongodb://127.0.0.1:{own_mongo.port}"}))
    c = app.test_client()
    assert c.get("/api/v1/health").status_code == 200
    own_mongo.stop()
    app.extensions[EXTENSION_KEY].expire()  # not the cached result: a probe of the outage
    started = time.monotonic()
    response = c.get("/api/v1/health")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    # A short stable message: no driver internals (exception names, host lists, timeouts).
    assert response.json["checks"] == {"mongodb": "error: unreachable", "redis": "ok",
                                       "storage": "ok"}


def test_health_degraded_with_both_pointed_at_closed_ports(make_settings) -> None:
    from images_service.dev.embedded import free_port

    app = create_app(make_settings({"MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}",
                                    "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    response = app.test_client().get("/api/v1/health")
    assert response.status_code == 503
    assert response.json == {"status": "degraded", "checks": {"mongodb": "error: unreachable",
                                                              "redis": "error: unreachable",
                                                              "storage": "ok"}}


def test_health_names_a_refused_login_and_logs_the_detail_redacted(make_settings, tmp_path,
                                                                   caplog) -> None:
    # Given a Redis that requires a password, and a REDIS_URL with the wrong one
    server = start_redis(tmp_path / "locked-redis", password="the-real-password-1")
    try:
        url = f"redis://:not-the-password-42@127.0.0.1:{server.port}/0"
        app = create_app(make_settings({"REDIS_URL": url}))
        # When /health runs
        with caplog.at_level("WARNING", logger="images_service.backends"):
            response = app.test_client().get("/api/v1/health")
    finally:
        server.stop()
    # Then the body says why in a few words, and the log has the detail without the password
    assert response.status_code == 503
    assert response.json["checks"] == {"mongodb": "ok", "redis": "error: authentication failed",
                                       "storage": "ok"}
    logged = [r.getMessage() for r in caplog.records if r.name == "images_service.backends"]
    assert logged and "AuthenticationError" in logged[0]
    assert "not-the-password-42" not in caplog.text + response.get_data(as_text=True)


def test_openapi_lists_exactly_the_routes_of_the_app(client) -> None:
    document = client.get("/api/v1/openapi.json", headers={"X-API-Key": KEY}).json
    assert document["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    served = set()
    for rule in client.application.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue  # un-prefixed aliases (/health, /docs) are conveniences, not the API
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = re.sub(r"\{\w+:", "{", path)  # {path:x}, {int:x}, {anypath:x} -> {x}
        served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served


def test_docs_served_in_development_only(make_settings) -> None:
    prod = create_app(make_settings()).test_client()
    assert prod.get("/docs", headers={"X-API-Key": KEY}).status_code == 404
    dev = create_app(make_settings({"ENVIRONMENT": "development"})).test_client()
    page = dev.get("/docs")
    assert page.status_code == 200 and b"swagger-ui-bundle.js" in page.data
    asset = dev.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.data) > 100_000  # from the package, no CDN


def test_rate_limit_answers_429_with_retry_after(make_settings) -> None:
    c = create_app(make_settings({"API_RATE_LIMIT": "3/minute"})).test_client()
    statuses = [c.get("/api/v1/openapi.json", headers={"X-API-Key": KEY}).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = c.get("/api/v1/openapi.json", headers={"X-API-Key": KEY})
    assert limited.json["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    # health stays reachable for probes
    assert c.get("/api/v1/health").status_code == 200


def test_cors_only_for_configured_origins(make_settings) -> None:
    c = create_app(make_settings({"CORS_ORIGINS": "https://ui.example.com"})).test_client()
    ok = c.get("/api/v1/health", headers={"Origin": "https://ui.example.com"})
    assert ok.headers.get("Access-Control-Allow-Origin") == "https://ui.example.com"
    other = c.get("/api/v1/health", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    none = create_app(make_settings()).test_client()
    assert "Access-Control-Allow-Origin" not in none.get(
        "/api/v1/health", headers={"Origin": "https://ui.example.com"}).headers


def test_failed_authentication_is_rate_limited_per_address(make_settings) -> None:
    settings = make_settings()
    allowed = int(settings.failed_auth_limit.split("/")[0])
    c = create_app(settings).test_client()
    # Given as many failed attempts as the budget allows, with changing wrong keys
    statuses = [c.get("/api/v1/jobs", headers={"X-API-Key": f"guess-{i:08d}"}).status_code
                for i in range(allowed)]
    assert statuses == [401] * allowed
    # When one more arrives, with or without a key, or with the right one
    for headers in ({"X-API-Key": "guess-one-more"}, {}, {"X-API-Key": KEY}):
        limited = c.get("/api/v1/jobs", headers=headers)
        # Then it is refused as rate limited, with the contract's body and a Retry-After
        assert limited.status_code == 429
        assert limited.json == {"error": {"code": "rate_limited",
                                          "message": "too many failed authentication attempts"}}
        assert 0 < int(limited.headers["Retry-After"]) <= 60
