"""Sample the broker's queue depths into ``images_queue_messages{queue,state}``.

States: ``ready`` (waiting in the queue), ``delayed`` (retries and other messages with an
ETA) and ``dead`` (dead-lettered), as read by images_service.queueing.queues. One daemon
thread per worker process samples them every ``INTERVAL_S``; the gauge's multiprocess mode
is ``max``, so the value is the same whichever process sampled last. The same thread samples
the number of hosts paused fleet-wide (``images_paused_hosts``, contract §17).
"""

from __future__ import annotations

import logging
import threading

import redis

from images_service.download.host_state import count_paused
from images_service.metrics import PAUSED_HOSTS, QUEUE_MESSAGES
from images_service.queueing.queues import queue_depths

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
STATES = ("ready", "delayed", "dead")


def sample_once(client: redis.Redis) -> None:
    for depth in queue_depths(client):
        for state in STATES:
            QUEUE_MESSAGES.labels(depth.name, state).set(getattr(depth, state))
    PAUSED_HOSTS.set(count_paused(client))


def start_sampler(client: redis.Redis, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            try:
                sample_once(client)
            except redis.RedisError as exc:
                log.debug("queue depth sample failed: %s", exc)
            stop.wait(INTERVAL_S)

    thread = threading.Thread(target=run, name="queue-metrics", daemon=True)
    thread.start()
    return thread
