"""Entry point of the Dramatiq worker: `dramatiq workers.app:setup workers.actors`.

Dramatiq calls :func:`setup` to get the broker before it imports the actor module, so the
broker is configured from settings in exactly one place.
"""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from images_service.logs import configure_logging
from images_service.settings import load_settings
from workers.broker import install_broker


def setup() -> RedisBroker:
    settings = load_settings()
    configure_logging(settings.log_level, json_lines=not settings.is_development)
    return install_broker(settings)
