"""The `images-service listener` process: change streams → change_stream jobs (contract §4).

Several listener processes may run; one leads (a lease in Redis with a fencing epoch,
workers/listener/lease.py), the others stand by and take over within ~11 s of its death.
The leader's work — streams, catch-up scans, de-duplicated enqueues, checkpoints — is one
:class:`~workers.listener.loop.LeaderTerm`; when it ends (lease lost, a backing service gone
for longer than the lease) the process goes back to standing by and tries again.

SIGTERM/SIGINT: the current event is finished, the checkpoint saved, the lease released (a
standby takes over at once) and the process exits 0, well within 30 s.

``--rescan`` records a request in ``listener_state``; whichever listener leads (this one or
another) runs a full catch-up scan within a few seconds, and this process then keeps
listening like any other.

Metrics are served on ``LISTENER_METRICS_PORT`` (0.0.0.0); when that port is taken (several
listeners on one host) the listener logs a warning and runs without its own endpoint.

Test-only: ``IMAGES_SERVICE_LISTENER_CRASH_AT=point:N`` makes the process exit abruptly the
Nth time it passes a crash point (workers/listener/enqueue.py: CrashPoints).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import redis
from prometheus_client import start_http_server
from pymongo.errors import PyMongoError

from images_service import metrics
from images_service.backends import mongo_client, redis_client
from images_service.config.settings import Settings
from images_service.jobs.store import JobStore
from images_service.jobs.triggers import Triggers
from images_service.logs import configure_logging
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from images_service.storage.factory import create_storage
from workers.listener.checkpoint import StateStore
from workers.listener.enqueue import CrashPoints, JobSubmitter
from workers.listener.lease import ACQUIRE_INTERVAL_S, Lease, LeaseKeeper
from workers.listener.loop import BACKOFF_MAX_S, LeaderTerm, ListenerServices
from workers.listener.tree import Decider, TreeReader

log = logging.getLogger(__name__)

#: Test-only fault injection (see the module docstring).
CRASH_ENV = "IMAGES_SERVICE_LISTENER_CRASH_AT"
#: MongoDB calls of the listener give up after this long (milliseconds) and are retried;
#: short enough that a stop during an outage stays well within 30 s.
MONGO_TIMEOUT_MS = 3000
#: Redis calls give up after this long (seconds): shorter than the lease's safety margin.
REDIS_TIMEOUT_S = 1.5
#: A metadata.json read (S3) gives up after this long (seconds) and the event is retried.
STORAGE_TIMEOUT_S = 5.0


def start_metrics_server(port: int) -> None:
    try:
        start_http_server(port, addr="0.0.0.0")
        log.info("listener metrics on port %d", port)
    except OSError as exc:
        log.warning("listener metrics port %d unavailable (%s): no metrics endpoint", port, exc)


def _request_rescan(state: StateStore, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            state.request_rescan()
            log.info("catch-up scan requested (--rescan)")
            return
        except PyMongoError as exc:
            log.warning("cannot record the rescan request yet: %s", exc)
            stop.wait(BACKOFF_MAX_S)


def run_listener(settings: Settings, *, rescan: bool = False) -> int:
    configure_logging(settings.log_level, json_lines=not settings.is_development)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    metrics.LISTENER_LEADER.set(0)
    start_metrics_server(settings.listener_metrics_port)
    mongo = mongo_client(settings, timeout_ms=MONGO_TIMEOUT_MS, app="images-service-listener")
    red = redis_client(settings, timeout_s=REDIS_TIMEOUT_S)
    # The listener only enqueues: its broker is not Dramatiq's global and needs no actors.
    broker = build_broker(settings, client=red, producer=True)
    jobs = JobStore(mongo, settings.jobs_database, retention_days=settings.job_retention_days)
    enqueuer = Enqueuer(broker)
    lease = Lease(red, settings.jobs_database)
    crash = CrashPoints(os.environ.get(CRASH_ENV))
    # The update rule reads a document's metadata.json where its write-back cannot say
    # (workers/listener/tree.py): the listener reads the tree, it never writes it. Short
    # timeouts: a store that does not answer makes the event wait with backoff (retried, like
    # MongoDB down), and a stop must not wait for a long read (§10: 30 s).
    storage = create_storage(settings, connect_timeout_s=STORAGE_TIMEOUT_S,
                             read_timeout_s=STORAGE_TIMEOUT_S, max_attempts=2) \
        if settings.watch_updates else None
    services = ListenerServices(
        settings=settings, mongo=mongo, state=StateStore(mongo, settings.jobs_database),
        submitter=JobSubmitter(Triggers(settings, mongo, red, jobs, enqueuer), jobs, enqueuer,
                               lease, crash),
        lease=lease, crash=crash,
        decider=Decider(settings, TreeReader(storage, settings) if storage else None, jobs),
    )
    keeper = LeaseKeeper(lease, stop)
    keeper.start()
    log.info("listener started: watching %s",
             ", ".join(str(ns) for ns in settings.watch_namespaces))
    if not settings.status_field:
        log.warning("STATUS_FIELD is empty: nothing records a finished download, so catch-up "
                    "scans only look for flagged documents (see workers/listener/decide.py)")
    if rescan:
        _request_rescan(services.state, stop)
    redis_down = False
    try:
        while not stop.is_set():
            try:
                acquired = lease.try_acquire()
                redis_down = False
            except redis.RedisError as exc:
                if not redis_down:
                    log.warning("Redis unavailable, cannot take the lease: %s", exc)
                redis_down = True
                stop.wait(ACQUIRE_INTERVAL_S)
                continue
            if not acquired:
                stop.wait(ACQUIRE_INTERVAL_S)
                continue
            try:
                ended = LeaderTerm(services, stop).run()
            except Exception as exc:  # a term that cannot start (MongoDB down...): retry later
                log.warning("leader term failed: %s: %s", type(exc).__name__, exc,
                            exc_info=not isinstance(exc, PyMongoError))
                ended = "error"
            if ended != "lease_lost":
                lease.release()  # a standby may take over at once
            if not stop.is_set() and ended != "stopped":
                stop.wait(ACQUIRE_INTERVAL_S)
    finally:
        lease.release()
        mongo.close()
        red.close()
        if storage is not None:
            storage.close()
    log.info("listener stopped")
    return 0
