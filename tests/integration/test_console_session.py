"""Console sessions without a browser: cookie flags, lifetime, key rotation, the shared
failed-auth budget, and CSRF confined to the console (real Redis and nx-27017)."""

from __future__ import annotations

from api import create_app
from tests.support.console import csrf_token
from tests.support.pipeline import KEY

OTHER_KEY = "other-key-0123456789"


def _signed_in(app, key: str = KEY):
    client = app.test_client()
    token = csrf_token(client.get("/ui/sign-in").text)
    response = client.post("/ui/sign-in", data={"csrf_token": token, "api_key": key})
    assert response.status_code == 303, response.text
    return client, response


def _page_status(client) -> int:
    return client.get("/ui/queues").status_code


def test_cookie_flags_follow_the_environment(make_settings):
    _, production = _signed_in(create_app(make_settings()))
    cookie = production.headers["Set-Cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"):
        assert flag in cookie
    _, development = _signed_in(create_app(make_settings({"ENVIRONMENT": "development"})))
    assert "Secure" not in development.headers["Set-Cookie"]
    assert "HttpOnly" in development.headers["Set-Cookie"]


def test_a_session_ends_after_its_lifetime(make_settings):
    client, _ = _signed_in(create_app(make_settings({"CONSOLE_SESSION_HOURS": "2"})))
    assert _page_status(client) == 200
    with client.session_transaction("/ui/queues") as session:
        session["since"] -= 2 * 3600 + 1
    assert client.get("/ui/queues").headers["Location"] == "/ui/sign-in?next=/ui/queues"


def test_rotating_the_api_keys_ends_sessions(make_settings):
    # Given a session signed with the secret derived from the keys
    client, _ = _signed_in(create_app(make_settings()))
    cookie = client.get_cookie("images_console", path="/ui").value

    # When the api restarts with a key added, the old cookie is no longer accepted
    rotated = create_app(make_settings({"API_KEYS": OTHER_KEY})).test_client()
    rotated.set_cookie("images_console", cookie, path="/ui")
    assert _page_status(rotated) == 302

    # With a fixed CONSOLE_SECRET_KEY, removing the key a session signed in with ends it
    secret = {"CONSOLE_SECRET_KEY": "s" * 40}
    both = create_app(make_settings({**secret, "API_KEYS": OTHER_KEY}))
    client, _ = _signed_in(both, OTHER_KEY)
    cookie = client.get_cookie("images_console", path="/ui").value
    same = create_app(make_settings({**secret, "API_KEYS": OTHER_KEY})).test_client()
    same.set_cookie("images_console", cookie, path="/ui")
    assert _page_status(same) == 200
    without = create_app(make_settings(secret)).test_client()
    without.set_cookie("images_console", cookie, path="/ui")
    assert _page_status(without) == 302


def test_failed_sign_ins_share_the_failed_auth_budget(make_settings):
    settings = make_settings()
    allowed = int(settings.failed_auth_limit.split("/")[0])
    client = create_app(settings).test_client()
    token = csrf_token(client.get("/ui/sign-in").text)
    statuses = [client.post("/ui/sign-in", data={"csrf_token": token, "api_key": "wrong-key-00"})
                .status_code for _ in range(allowed)]
    assert statuses == [401] * allowed
    refused = client.post("/ui/sign-in", data={"csrf_token": token, "api_key": "wrong-key-00"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    # the same budget as the API's key check
    assert client.get("/api/v1/jobs", headers={"X-API-Key": "wrong-key-00"}).status_code == 429
    # and over it the right key does not sign in either (contract §14): no session cookie
    right = client.post("/ui/sign-in", data={"csrf_token": token, "api_key": KEY})
    assert right.status_code == 429 and "images_console" not in right.headers.get("Set-Cookie", "")


def test_the_json_api_needs_no_csrf_token_and_sets_no_cookie(make_settings):
    client = create_app(make_settings()).test_client()
    response = client.post("/api/v1/jobs/no-such-job/cancel", headers={"X-API-Key": KEY})
    assert (response.status_code, response.json["error"]["code"]) == (404, "job_not_found")
    assert "Set-Cookie" not in response.headers
