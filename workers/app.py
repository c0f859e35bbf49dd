"""Entry point of the Dramatiq worker: `dramatiq workers.app:setup workers.actors`.

Dramatiq calls :func:`setup` in each worker process to get the broker before it imports the
actor module, so the broker is configured from settings in exactly one place.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.prometheus import Prometheus

from images_service.config.settings import load_settings
from images_service.logs import configure_logging
from images_service.queueing.broker import install_broker
from workers.services import PipelineMiddleware

log = logging.getLogger(__name__)


def _exit_when_orphaned(parent_pid: int) -> None:
    # Dramatiq's worker processes do not watch their master: if it is killed (SIGKILL, OOM),
    # they would go on consuming forever, unsupervised. Exit instead; unacked messages are
    # redelivered by the broker's maintenance, as for any dead worker.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            log.error("worker master %s is gone; exiting", parent_pid)
            os._exit(1)


def setup() -> RedisBroker:
    settings = load_settings()
    configure_logging(settings.log_level, json_lines=not settings.is_development)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True,
                     name="orphan-watch").start()
    broker = install_broker(settings)
    # Dramatiq's own message metrics; its exposition server (a process forked by the
    # Dramatiq master, on WORKER_METRICS_PORT) serves the multiprocess registry that the
    # service's metrics (images_service.metrics) are written to as well. Only the worker adds
    # it: its hooks need the worker's process-boot event.
    broker.add_middleware(Prometheus())
    broker.add_middleware(PipelineMiddleware(settings))
    return broker
