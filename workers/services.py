"""Per-process services of the worker (the download pipeline), held by a broker middleware.

The broker is the service's one global; the pipeline hangs off it instead of living in a
module global of its own. It is built on first use inside each worker process (after the
fork, which pymongo requires), starts the queue-depth sampler and the job sweeper with the
worker, and is closed when the worker shuts down.

Shutdown order (dramatiq.Worker.stop): ``before_worker_shutdown``, then the worker threads
are stopped and joined (up to ``--worker-shutdown-timeout``), then consumers are closed and
unstarted messages requeued, then ``after_worker_shutdown``. So new work is refused in the
first hook and the pool and fetcher are closed only in the last: downloads in flight finish
instead of failing (contract §10).
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq import Broker

from images_service.backends import mongo_client, redis_client
from images_service.config.settings import Settings
from images_service.queueing.messages import Enqueuer
from workers.pipeline import DownloadPipeline
from workers.queue_metrics import start_sampler
from workers.sweeper import start_sweeper


class PipelineMiddleware(dramatiq.Middleware):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pipeline: DownloadPipeline | None = None
        self._lock = threading.Lock()
        self._stop_threads = threading.Event()

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
        pipeline = self.pipeline(broker)
        start_sampler(pipeline.redis, self._stop_threads)
        start_sweeper(pipeline.ctx, pipeline.finisher, self._stop_threads)
        writer = pipeline.ctx.index_writer
        pipeline.ctx.timeline.start(pipeline.ctx.pool, self._stop_threads, probes={
            "index_queued": writer.queued, "index_writes": lambda: writer.writes,
            "index_entries": lambda: writer.entries, "index_write_s": lambda: writer.write_s})

    def before_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        self._stop_threads.set()
        if self._pipeline is not None:
            self._pipeline.ctx.begin_shutdown()

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        if self._pipeline is not None:
            self._pipeline.close()


def current_pipeline() -> DownloadPipeline:
    broker = dramatiq.get_broker()
    for middleware in broker.middleware:
        if isinstance(middleware, PipelineMiddleware):
            return middleware.pipeline(broker)
    raise RuntimeError("the broker has no PipelineMiddleware: use workers.app:setup")
