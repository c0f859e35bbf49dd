"""The web console at ``/ui/`` (contract §13): server-rendered pages over the service functions.

Flower's pages (jobs, one job, queues, the listener) done Flask's way: Jinja2 templates and
static files inside this package, Flask's signed session cookie after signing in with an API
key (auth.py), flask-wtf's ``CSRFProtect`` on every form. No SPA and no CDN: every page works
without JavaScript (progress refreshes by reloading), and a small script (static/console.js)
refreshes the progress bars in place when JavaScript runs.

The JSON API is untouched by all of this: CSRF is checked only in this blueprint, and the
session cookie's path is ``/ui``. Every response under ``/ui`` (pages, files, errors, even a
404) carries :data:`SECURITY_HEADERS` (contract §14 "Surface"): no other site may frame the
console, browsers must not sniff its files into another type, and the CSP allows only the
console's own files: no inline script or style anywhere in its templates.
"""

from __future__ import annotations

from flask import Flask, Response, request
from flask_wtf.csrf import CSRFProtect

from api.auth import FailedAttempts
from api.console.auth import ConsoleAuth, configure_session
from api.limits import ConsoleLimit, is_console_path
from images_service.config.settings import Settings

EXTENSION_KEY = "images_service_console"
#: Headers of every console response.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _add_security_headers(response: Response) -> Response:
    if is_console_path(request.path):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def init_console(app: Flask, settings: Settings, failed_attempts: FailedAttempts | None,
                 limit: ConsoleLimit | None = None) -> None:
    """Serve the console from ``app`` (call from the app factory)."""
    # Its routes join the blueprint, which must happen before the blueprint is registered.
    from api.console import trash  # noqa: F401
    from api.console.views import bp

    configure_session(app, settings)
    csrf = CSRFProtect()
    csrf.init_app(app)
    app.extensions[EXTENSION_KEY] = {"auth": ConsoleAuth(settings), "csrf": csrf,
                                     "failed_attempts": failed_attempts, "limit": limit}
    app.register_blueprint(bp)
    app.after_request(_add_security_headers)
