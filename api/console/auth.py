"""Console sign-in: an API key exchanged for Flask's signed session cookie (contract §13).

The key is checked like ``X-API-Key`` (constant time, against every accepted key) and a
wrong one counts against the same failed-authentication budget per client address
(api/limits.py), so the sign-in form is no side door for guessing keys.

The session holds no key, only ``key_id``: an HMAC of the key under the signing secret,
``since``, the sign-in time, and ``sid``, a random id naming this sign-in (the console's
request budget counts per ``sid``, api/limits.py). Every request re-derives the ids of the
keys accepted *now*, so a key removed from ``API_KEYS`` ends its sessions at once, and a
session lives at most ``CONSOLE_SESSION_HOURS`` whatever the cookie says (the cookie's own
expiry is the same lifetime, set by Flask). The signing secret is ``CONSOLE_SECRET_KEY`` or,
when empty, an HMAC of the accepted API keys: rotating the keys then invalidates every session
and every CSRF token, and several api processes derive the same secret without sharing any
state.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from flask import Flask, session

from api.auth import key_is_valid
from images_service.config.settings import Settings

#: HMAC message for the derived signing secret (versioned: changing it ends all sessions).
_DERIVATION_LABEL = b"images-service/console-session/v1"
SESSION_COOKIE = "images_console"


def signing_secret(settings: Settings) -> str:
    """``CONSOLE_SECRET_KEY``, else a secret derived from the API keys (never logged)."""
    if settings.console_secret_key:
        return settings.console_secret_key
    material = "\n".join(sorted(settings.api_keys)).encode()
    return hmac.new(material, _DERIVATION_LABEL, hashlib.sha256).hexdigest()


def configure_session(app: Flask, settings: Settings) -> None:
    """Flask's cookie session, scoped to the console's paths (the JSON API never sees it)."""
    lifetime = timedelta(hours=settings.console_session_hours)
    app.config.update(
        SECRET_KEY=signing_secret(settings),
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.environment == "production",
        PERMANENT_SESSION_LIFETIME=lifetime,
        # The lifetime counts from sign-in, not from the last click.
        SESSION_REFRESH_EACH_REQUEST=False,
        # CSRF only where the console asks for it (api/console/__init__.py), valid as long
        # as the session: a page left open for an hour must still cancel a job.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=int(lifetime.total_seconds()),
    )


def _key_id(secret: str, key: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:32]


class ConsoleAuth:
    """Signs a browser in and out, and says whether the current session is valid."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = signing_secret(settings)
        self.lifetime_s = settings.console_session_hours * 3600

    def key_valid(self, candidate: str | None) -> bool:
        return key_is_valid(candidate, self.settings.api_keys)

    def sign_in(self, key: str) -> None:
        """Start a fresh session for a valid ``key`` (call :meth:`key_valid` first)."""
        session.clear()  # nothing from before sign-in survives (session fixation)
        session.permanent = True
        session["key_id"] = _key_id(self.secret, key)
        session["since"] = int(time.time())
        session["sid"] = secrets.token_urlsafe(16)

    def sign_out(self) -> None:
        session.clear()

    def session_id(self) -> str | None:
        """The id of the current sign-in when the session is valid, else None."""
        if not self.signed_in():
            return None
        sid = session.get("sid")
        # A session from before ``sid`` existed: its key id and sign-in time name it.
        return sid if isinstance(sid, str) and sid else f"{session['key_id']}:{session['since']}"

    def signed_in(self) -> bool:
        key_id, since = session.get("key_id"), session.get("since")
        if not isinstance(key_id, str) or not isinstance(since, int):
            return False
        if not 0 <= time.time() - since < self.lifetime_s:
            return False
        matched = False
        for key in self.settings.api_keys:  # no early exit, like the header check
            matched |= hmac.compare_digest(key_id, _key_id(self.secret, key))
        return matched
