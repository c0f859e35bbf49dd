"""The REST API: a Flask app factory wiring blueprints, auth, errors, limits and metrics."""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from api.auth import init_auth
from api.context import EXTENSION_KEY, ApiServices
from api.errors import register_error_handlers
from images_service.config.settings import Settings, SettingsError, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the api for ``settings`` (default: read from the environment).

    Raises SettingsError when ENVIRONMENT=production and no API key is configured.
    """
    settings = settings or load_settings()
    if settings.api_key_required_but_missing:
        raise SettingsError("API_KEY (or API_KEYS) is required when ENVIRONMENT=production")

    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False
    if settings.trusted_proxies:
        # The client address (budgets, logs) is the n-th entry from the right of
        # X-Forwarded-For; with no proxy trusted that header is ignored (contract §14).
        # Only the address: the scheme and host headers stay untrusted (x_proto=0).
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=0)
    app.extensions[EXTENSION_KEY] = ApiServices.build(settings)

    from api.limits import ConsoleLimit, FailedAuthLimit, build_limiter

    register_error_handlers(app)
    limiter = build_limiter(redis_url=settings.redis_url, limit=settings.api_rate_limit)
    failed_attempts = FailedAuthLimit(limiter, settings.failed_auth_limit)
    init_auth(app, settings.api_keys, docs_open=settings.is_development,
              failed_attempts=failed_attempts)
    if settings.cors_origins:
        CORS(app, origins=list(settings.cors_origins), allow_headers=["Content-Type", "X-API-Key"],
             expose_headers=["Location", "Retry-After"])

    from api import (
        documents,
        downloads,
        health,
        jobs,
        openapi,
        placeholders,
        queues,
        refresh,
        trash,
    )
    from api.console import init_console
    from api.metrics import init_metrics

    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(refresh.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(queues.bp)
    app.register_blueprint(documents.bp)
    app.register_blueprint(placeholders.bp)
    app.register_blueprint(trash.bp)
    # The web console (/ui/): its own sign-in (failed sign-ins share the failed-auth budget)
    # and its own request budget per session, never the API keys'.
    init_console(app, settings, failed_attempts,
                 ConsoleLimit(limiter, settings.console_rate_limit))
    # Attached after the auth hook, so the per-key budget counts authenticated calls only.
    limiter.init_app(app)
    init_metrics(app)
    return app
