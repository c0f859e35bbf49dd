"""What the Redis broker holds: queue depths, live workers, and the redrive of dead letters.

Read from the keys of dramatiq 2.2's RedisBroker (``dramatiq/brokers/redis/dispatch.lua``),
for namespace ``ns`` and queue ``q``:

- ``ns:q`` list of message ids ready to be fetched; ``ns:q.msgs`` hash id -> encoded message
  (ready *and* fetched-but-unacked messages);
- ``ns:q.DQ`` / ``ns:q.DQ.msgs`` the same for delayed messages (those with an ETA). A worker
  prefetches up to threads x 1000 of them and holds them in memory until they are due, so the
  list is nearly always empty while workers run: the hash is what counts as "delayed";
- ``ns:q.XQ`` sorted set of dead-lettered ids scored by when they died (ms);
  ``ns:q.XQ.msgs`` hash id -> encoded message (dead letters of ``q.DQ`` land here too);
- ``ns:__heartbeats__`` sorted set broker id -> time of its last dispatch (ms, the caller's
  clock). Every broker that runs the dispatch script is added, enqueue-only ones too, which is
  why the api's and the listener's brokers carry :data:`PRODUCER_ID_PREFIX` (broker.py).

Used by the api (``GET /queues``, redrive) and by the workers' queue-depth metrics.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import dramatiq
import redis
from dramatiq.errors import DecodeError

from images_service.errors import NotFound
from images_service.queueing.broker import NAMESPACE, PRODUCER_ID_PREFIX
from images_service.queueing.messages import QUEUES

log = logging.getLogger(__name__)

#: A worker process counts as alive when it dispatched within this many milliseconds
#: (an idle worker still polls every queue at least every few seconds).
WORKER_WINDOW_MS = 60_000
#: Dead letters read per round trip during a redrive.
REDRIVE_BATCH = 200
#: Options that belong to the dead message's previous life: a redriven message starts with a
#: fresh retry budget, no ETA and a new broker id.
RESET_OPTIONS = frozenset({"retries", "traceback", "eta", "redis_message_id"})

# Moves one dead letter back to its queue, atomically: it leaves the dead letters and joins
# the queue in one step, so a crash never loses it (both or neither) and two concurrent
# redrives never enqueue it twice (only the caller whose ZREM removed it goes on).
# KEYS: dead set, dead hash, queue list, queue hash. ARGV: dead id, new id, new message data.
_MOVE_SCRIPT = """
if redis.call('zrem', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('hset', KEYS[4], ARGV[2], ARGV[3])
redis.call('rpush', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class QueueDepth:
    name: str
    ready: int
    delayed: int
    dead: int


def check_queue(name: str) -> None:
    if name not in QUEUES:
        raise NotFound(f"queue {name} not found (queues: {', '.join(QUEUES)})",
                       code="queue_not_found")


def queue_depths(client: redis.Redis, namespace: str = NAMESPACE) -> list[QueueDepth]:
    """Ready, delayed and dead messages of every queue the workers consume."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(f"{namespace}:{queue}")
        pipe.hlen(f"{namespace}:{queue}.DQ.msgs")
        pipe.zcard(f"{namespace}:{queue}.XQ")
    values = [int(v) for v in pipe.execute()]
    return [QueueDepth(queue, *values[3 * i: 3 * i + 3]) for i, queue in enumerate(QUEUES)]


def live_workers(client: redis.Redis, namespace: str = NAMESPACE, *,
                 window_ms: int = WORKER_WINDOW_MS, now_ms: int | None = None) -> int:
    """Worker processes (one broker each) whose heartbeat is younger than ``window_ms``."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    members = client.zrangebyscore(f"{namespace}:__heartbeats__", now_ms - window_ms, "+inf")
    prefix = PRODUCER_ID_PREFIX.encode()
    return sum(1 for member in members if not member.startswith(prefix))


def fresh_message(data: bytes, queue: str) -> tuple[str, bytes]:
    """The dead message re-encoded for ``queue``: (its new broker id, its data)."""
    dead = dramatiq.Message.decode(data)
    new_id = str(uuid.uuid4())
    options = {k: v for k, v in dead.options.items() if k not in RESET_OPTIONS}
    options["redis_message_id"] = new_id
    # Message.copy merges options and cannot drop one: build the message anew. The
    # message_id is kept, so the logs of its earlier lives can still be found.
    fresh = dramatiq.Message(queue_name=queue, actor_name=dead.actor_name, args=dead.args,
                             kwargs=dead.kwargs, options=options, message_id=dead.message_id,
                             message_timestamp=int(time.time() * 1000))
    return new_id, fresh.encode()


def redrive(client: redis.Redis, queue: str, namespace: str = NAMESPACE) -> int:
    """Enqueue the dead letters of ``queue`` again as fresh messages; returns how many.

    Only the messages dead when the call starts are moved (a message that dies again during
    the redrive waits for the next one). A message that cannot be decoded stays where it is.
    """
    check_queue(queue)
    dead_key = f"{namespace}:{queue}.XQ"
    keys = [dead_key, f"{dead_key}.msgs", f"{namespace}:{queue}", f"{namespace}:{queue}.msgs"]
    move = client.register_script(_MOVE_SCRIPT)
    dead_ids = client.zrange(dead_key, 0, -1)
    moved = 0
    for start in range(0, len(dead_ids), REDRIVE_BATCH):
        batch = dead_ids[start:start + REDRIVE_BATCH]
        for dead_id, data in zip(batch, client.hmget(keys[1], batch)):
            if data is None:
                # Expired meanwhile (the broker's maintenance drops both keys at once) or
                # redriven by a concurrent call.
                continue
            try:
                new_id, new_data = fresh_message(data, queue)
            except DecodeError as exc:
                log.warning("dead letter %s of %s cannot be decoded: %s", dead_id, queue, exc)
                continue
            moved += int(move(keys=keys, args=[dead_id, new_id, new_data]))
    log.info("redrive of %s: %d dead letters enqueued again", queue, moved)
    return moved
