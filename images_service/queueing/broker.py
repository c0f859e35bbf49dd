"""Build the Dramatiq Redis broker from settings: the one global of the service.

Redelivery after a worker dies: the Redis broker moves a dead worker's unacked messages back
to their queue during "maintenance", which any live consumer runs on a fetch with probability
``maintenance_chance`` per million, for workers whose heartbeat is older than
``heartbeat_timeout``. Dramatiq's defaults (60 s, 1,000 per million) can leave messages
stranded for many minutes on a quiet fleet; ours (20 s, 50,000 per million, i.e. one fetch in
20) bring them back well within a minute. Maintenance is cheap (a sorted-set range query).
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from images_service.config.settings import Settings

#: Milliseconds without a heartbeat after which a worker's messages are requeued.
HEARTBEAT_TIMEOUT_MS = 20_000
#: Fetches per million that run maintenance (requeue of dead workers' messages): 1 in 20.
MAINTENANCE_CHANCE = 50_000
#: Dead-lettered messages are kept this long for inspection (milliseconds): 3 days.
DEAD_MESSAGE_TTL_MS = 3 * 24 * 3600 * 1000
#: Redis key namespace of the broker's queues.
NAMESPACE = "images-service"
#: Broker ids of enqueue-only processes (api, listener) start with this. The dispatch script
#: records every caller in the heartbeats set, so this is how a worker count tells them apart.
PRODUCER_ID_PREFIX = "producer-"


def build_broker(settings: Settings, *, client: redis.Redis | None = None,
                 producer: bool = False) -> RedisBroker:
    """A Redis broker with the built-in middleware the actors rely on.

    ``producer``: the broker only enqueues (api, listener); its id is marked as such.
    """
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=10 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=settings.max_retries, min_backoff=settings.retry_backoff_min_ms,
                max_backoff=settings.retry_backoff_max_ms),
        CurrentMessage(),
    ]
    broker = RedisBroker(
        url=None if client is not None else settings.redis_url,
        client=client,
        namespace=NAMESPACE,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
        middleware=middleware,
    )
    if producer:
        broker.broker_id = PRODUCER_ID_PREFIX + broker.broker_id
    return broker


def install_broker(settings: Settings) -> RedisBroker:
    """Build the broker and make it Dramatiq's global; call before importing actors."""
    broker = build_broker(settings)
    dramatiq.set_broker(broker)
    return broker
