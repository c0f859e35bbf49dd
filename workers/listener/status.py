"""The listener as an operator sees it, read from what the listeners save (web console, §13).

Nothing here talks to a listener process: a leader may run on another host, and its
Prometheus gauges (lag, checkpoint age) live in its own process. What every listener leaves
behind is enough:

- the lease in Redis (workers/listener/lease.py): whether a leader holds it now, for how much
  longer without a renewal, and the epoch counter of the latest term;
- ``JOBS_DATABASE.listener_state`` (workers/listener/checkpoint.py): the ``leader`` record
  (epoch, since), and one ``token:<stream>`` document per stream with the time it was saved
  (the checkpoint age) and the resume token.

Lag is the age of the last position the checkpoint vouches for. A MongoDB resume token
starts with the event's cluster time (``_data`` is hex KeyString: ``82`` then the 8-byte
Timestamp, seconds first), and a quiet stream's token keeps advancing with the cluster, so
``now - token time`` is how far behind the saved position is. nx-27017's tokens
(``nx:<row>``) carry no time: there the lag is unknown and only the checkpoint age is shown.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from pymongo import MongoClient

from workers.listener.checkpoint import STATE_COLLECTION
from workers.listener.lease import Lease

#: KeyString type byte of a BSON Timestamp, the first value of a MongoDB resume token.
_TIMESTAMP_TYPE = "82"


def token_time(token: Any) -> float | None:
    """Epoch seconds of a MongoDB resume token's cluster time; None when it holds none."""
    data = token.get("_data") if isinstance(token, Mapping) else None
    if not isinstance(data, str) or len(data) < 18 or not data.startswith(_TIMESTAMP_TYPE):
        return None
    try:
        return float(int(data[2:10], 16))
    except ValueError:
        return None


@dataclass(frozen=True)
class StreamCheckpoint:
    """The saved position of one change stream (``db.coll`` or ``db.*``)."""

    stream: str
    epoch: int | None
    saved_at: float | None  #: epoch seconds
    token_time: float | None  #: epoch seconds of the token's cluster time, when it has one

    def age_s(self, now: float) -> float | None:
        return None if self.saved_at is None else max(0.0, now - self.saved_at)

    def lag_s(self, now: float) -> float | None:
        return None if self.token_time is None else max(0.0, now - self.token_time)


@dataclass(frozen=True)
class ListenerStatus:
    leader_present: bool  #: a listener holds the lease now
    lease_ttl_ms: int | None  #: until the lease lapses without a renewal (None: no leader)
    epoch: int | None  #: latest term (Redis counter); None when never elected
    leader_epoch: int | None  #: the term recorded in MongoDB by the last leader
    leader_since: float | None  #: epoch seconds
    streams: list[StreamCheckpoint]
    scan_in_progress: bool
    rescan_requested: bool
    redis_error: str | None  #: the lease could not be read (Redis down)
    read_at: float


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_status(mongo: MongoClient, client: redis.Redis, jobs_database: str, *,
                now: float | None = None) -> ListenerStatus:
    """Read the lease and the saved state; a Redis outage is reported, MongoDB's raises."""
    now = time.time() if now is None else now
    # The lease names its keys itself (one place for the format); building it costs no I/O.
    lease = Lease(client, jobs_database)
    present, ttl_ms, epoch, redis_error = False, None, None, None
    try:
        pipe = client.pipeline(transaction=False)
        pipe.pttl(lease.key)
        pipe.get(lease.epoch_key)
        pttl, raw_epoch = pipe.execute()
        present = int(pttl) > 0
        ttl_ms = int(pttl) if present else None
        epoch = int(raw_epoch) if raw_epoch is not None else None
    except redis.RedisError as exc:
        redis_error = type(exc).__name__

    state = mongo[jobs_database][STATE_COLLECTION]
    streams: list[StreamCheckpoint] = []
    leader: Mapping[str, Any] = {}
    scan_in_progress = rescan_requested = False
    for doc in state.find({}):
        key = str(doc.get("_id"))
        if key.startswith("token:"):
            streams.append(StreamCheckpoint(
                stream=key[len("token:"):],
                epoch=int(doc["epoch"]) if _number(doc.get("epoch")) is not None else None,
                saved_at=_number(doc.get("saved_at")),
                token_time=token_time(doc.get("token")),
            ))
        elif key == "leader":
            leader = doc
        elif key == "scan":
            scan_in_progress = bool(doc.get("state_json"))
        elif key == "rescan_request":
            rescan_requested = True
    streams.sort(key=lambda s: s.stream)
    leader_epoch = _number(leader.get("epoch"))
    return ListenerStatus(
        leader_present=present,
        lease_ttl_ms=ttl_ms,
        epoch=epoch,
        leader_epoch=int(leader_epoch) if leader_epoch is not None else None,
        leader_since=_number(leader.get("since")),
        streams=streams,
        scan_in_progress=scan_in_progress,
        rescan_requested=rescan_requested,
        redis_error=redis_error,
        read_at=now,
    )
