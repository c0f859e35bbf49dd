"""Build the Dramatiq Redis broker from settings: the one global of the service.

Redelivery after a worker dies: the Redis broker moves a dead worker's unacked messages back
to their queue during "maintenance", which any live consumer runs with probability
1/``maintenance_chance`` on each fetch, for workers whose heartbeat is older than
``heartbeat_timeout``. Dramatiq's defaults (60 s, 1/1000) can leave messages stranded for
many minutes on a quiet fleet; ours (20 s, 1/20) bring them back well within a minute.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Pipelines, Retries, ShutdownNotifications, TimeLimit

from images_service.settings import Settings

#: Milliseconds without a heartbeat after which a worker's messages are requeued.
HEARTBEAT_TIMEOUT_MS = 20_000
#: Each fetch runs maintenance (requeue of dead workers' messages) with chance 1/N.
MAINTENANCE_CHANCE = 20
#: Dead-lettered messages are kept this long for inspection (milliseconds): 3 days.
DEAD_MESSAGE_TTL_MS = 3 * 24 * 3600 * 1000
#: Redis key namespace of the broker's queues.
NAMESPACE = "images-service"


def build_broker(settings: Settings) -> RedisBroker:
    """A Redis broker with the built-in middleware the actors rely on."""
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
    return RedisBroker(
        url=settings.redis_url,
        namespace=NAMESPACE,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
        middleware=middleware,
    )


def install_broker(settings: Settings) -> RedisBroker:
    """Build the broker and make it Dramatiq's global; call before importing actors."""
    broker = build_broker(settings)
    dramatiq.set_broker(broker)
    return broker
