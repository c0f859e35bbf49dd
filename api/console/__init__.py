"""The web console at ``/ui/`` (contract §13): server-rendered pages over the service functions.

Flower's pages (jobs, one job, queues, the listener) done Flask's way: Jinja2 templates and
static files inside this package, Flask's signed session cookie after signing in with an API
key (auth.py), flask-wtf's ``CSRFProtect`` on every form. No SPA and no CDN: every page works
without JavaScript (progress refreshes by reloading), and a small script (static/console.js)
refreshes the progress bars in place when JavaScript runs.

The JSON API is untouched by all of this: CSRF is checked only in this blueprint, and the
session cookie's path is ``/ui``.
"""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from api.auth import FailedAttempts
from api.console.auth import ConsoleAuth, configure_session
from images_service.config.settings import Settings

EXTENSION_KEY = "images_service_console"


def init_console(app: Flask, settings: Settings, failed_attempts: FailedAttempts | None) -> None:
    """Serve the console from ``app`` (call from the app factory)."""
    from api.console.views import bp

    configure_session(app, settings)
    csrf = CSRFProtect()
    csrf.init_app(app)
    app.extensions[EXTENSION_KEY] = {"auth": ConsoleAuth(settings), "csrf": csrf,
                                     "failed_attempts": failed_attempts}
    app.register_blueprint(bp)
