"""Entry point of the Dramatiq worker: `dramatiq workers.app:setup workers.actors`.

Dramatiq calls :func:`setup` in each worker process to get the broker before it imports the
actor module, so the broker is configured from settings in exactly one place.
"""

from __future__ import annotations

import logging

from dramatiq.brokers.redis import RedisBroker

from images_service.config.settings import load_settings
from images_service.logs import configure_logging
from images_service.queueing.broker import install_broker
from workers.orphans import OrphanAwarePrometheus, watch_master
from workers.services import PipelineMiddleware

log = logging.getLogger(__name__)


def setup() -> RedisBroker:
    settings = load_settings()
    configure_logging(settings.log_level, json_lines=not settings.is_development)
    watch_master()  # workers/orphans.py
    broker = install_broker(settings)
    # Dramatiq's own message metrics; its exposition server (a process forked by the
    # Dramatiq master, on WORKER_METRICS_PORT) serves the multiprocess registry that the
    # service's metrics (images_service.metrics) are written to as well. Only the worker adds
    # it: its hooks need the worker's process-boot event.
    broker.add_middleware(OrphanAwarePrometheus())
    broker.add_middleware(PipelineMiddleware(settings))
    return broker
