"""Retention of the service's own rows (jobs, job documents): who deletes what has expired.

Each row carries ``retention.expire_at`` (a date). On MongoDB a TTL index on it is the whole
mechanism: the server's TTL monitor deletes expired rows in the background, about once a
minute, at no cost to the queries (MongoDB manual, "TTL Indexes").

nx-27017 quirk (measured 2026-12-07, docs/throughput.md "The listener path"): it has no
background monitor; instead *every* ``find`` on a collection with a TTL index first runs two
``delete_many`` scans of the whole collection (its datetime and its epoch forms), under the
database's lock. A ``find_one`` by ``_id`` on ``jobs`` cost 0.6 ms with 100 rows, 3.1 ms
with 2,000 and 10.4 ms with 10,000, and every other command on ``JOBS_DATABASE`` (the
listener's job inserts among them) waited behind it: the dev stack and every benchmark slowed
down as jobs accumulated. So on a server that does not expire rows itself, no TTL index is
made (an earlier one is dropped) and the worker's sweeper deletes the expired rows once per
pass, fleet-wide (workers/sweeper.py): the same rows go, within a minute of the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

#: The date field every retained row carries (a whole subdocument, so that nx-27017 keeps
#: its type: images_service/jobs/store.py).
EXPIRE_FIELD = "retention.expire_at"
#: ``buildInfo.process`` of the embedded server (a real mongod or mongos has no such field).
EMBEDDED_PROCESS = "nx_27017"


def expires_in_background(build_info: Mapping[str, Any]) -> bool:
    """Does the server behind ``build_info`` delete TTL-expired documents on its own?"""
    return build_info.get("process") != EMBEDDED_PROCESS


def server_expires_ttl(client: MongoClient) -> bool:
    """:func:`expires_in_background` for the server ``client`` talks to (one command)."""
    return expires_in_background(client.admin.command("buildInfo"))


def ensure_retention_index(collection: Collection, by_server: bool | None) -> bool:
    """The TTL index where the server honours it cheaply; none where it does not. Returns
    whether the server expires rows itself (``by_server``, asked of it when None).

    False (nx-27017): a TTL index made by an earlier version is dropped, so queries stop
    paying for it; the sweeper purges instead (:func:`purge_expired`).
    """
    if by_server is None:
        by_server = server_expires_ttl(collection.database.client)
    if by_server:
        collection.create_index(EXPIRE_FIELD, expireAfterSeconds=0)
        return True
    for name, spec in collection.index_information().items():
        if "expireAfterSeconds" in spec and [k for k, _ in spec["key"]] == [EXPIRE_FIELD]:
            try:
                collection.drop_index(name)
                log.info("dropped TTL index %s of %s: the sweeper purges expired rows",
                         name, collection.full_name)
            except OperationFailure as exc:  # another process dropped it first
                log.debug("TTL index %s already gone: %s", name, exc)
    return False


def purge_expired(collection: Collection, now: datetime | None = None) -> int:
    """Delete the rows whose ``retention.expire_at`` has passed; returns how many."""
    cutoff = now or datetime.now(UTC)
    return collection.delete_many({EXPIRE_FIELD: {"$lt": cutoff}}).deleted_count
