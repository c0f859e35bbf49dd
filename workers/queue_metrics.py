"""Sample the broker's queue depths into ``images_queue_messages{queue,state}``.

States: ``ready`` (waiting in the queue), ``delayed`` (retries and other messages with an
ETA) and ``dead`` (dead-lettered). One daemon thread per worker process reads the Redis
broker's keys every ``INTERVAL_S``; the gauge's multiprocess mode is ``max``, so the value is
the same whichever process sampled last.
"""

from __future__ import annotations

import logging
import threading

import redis

from images_service.metrics import QUEUE_MESSAGES
from images_service.queueing.broker import NAMESPACE
from images_service.queueing.messages import QUEUES

log = logging.getLogger(__name__)

INTERVAL_S = 5.0


def queue_depths(client: redis.Redis, namespace: str = NAMESPACE) -> dict[tuple[str, str], int]:
    """(queue, state) -> number of messages, read from the Redis broker's keys."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(f"{namespace}:{queue}")
        pipe.llen(f"{namespace}:{queue}.DQ")
        pipe.zcard(f"{namespace}:{queue}.XQ")
    values = pipe.execute()
    depths: dict[tuple[str, str], int] = {}
    for i, queue in enumerate(QUEUES):
        ready, delayed, dead = values[3 * i: 3 * i + 3]
        depths[(queue, "ready")] = int(ready)
        depths[(queue, "delayed")] = int(delayed)
        depths[(queue, "dead")] = int(dead)
    return depths


def sample_once(client: redis.Redis) -> None:
    for (queue, state), value in queue_depths(client).items():
        QUEUE_MESSAGES.labels(queue, state).set(value)


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
