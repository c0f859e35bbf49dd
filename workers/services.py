"""Per-process services of the worker (the download pipeline), held by a broker middleware.

The broker is the service's one global; the pipeline hangs off it instead of living in a
module global of its own. It is built on first use inside each worker process (after the
fork, which pymongo requires) and closed when the worker shuts down.
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq import Broker

from images_service.backends import mongo_client, redis_client
from images_service.settings import Settings
from images_service.queueing.messages import Enqueuer
from workers.pipeline import DownloadPipeline
from workers.queue_metrics import start_sampler


class PipelineMiddleware(dramatiq.Middleware):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pipeline: DownloadPipeline | None = None
        self._lock = threading.Lock()
        self._stop_sampler = threading.Event()

    def pipeline(self, broker: Broker) -> DownloadPipeline:
        if self._pipeline is None:
            with self._lock:
                if self._pipeline is None:
                    self._pipeline = DownloadPipeline(
                        self.settings,
                        mongo=mongo_client(self.settings, app="images-service-worker"),
                        redis_client=redis_client(self.settings),
                        enqueuer=Enqueuer(broker),
                    )
        return self._pipeline

    def after_worker_boot(self, broker: Broker, worker: dramatiq.Worker) -> None:
        start_sampler(self.pipeline(broker).redis, self._stop_sampler)

    def before_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        self._stop_sampler.set()
        if self._pipeline is not None:
            self._pipeline.close()


def current_pipeline() -> DownloadPipeline:
    broker = dramatiq.get_broker()
    for middleware in broker.middleware:
        if isinstance(middleware, PipelineMiddleware):
            return middleware.pipeline(broker)
    raise RuntimeError("the broker has no PipelineMiddleware: use workers.app:setup")
