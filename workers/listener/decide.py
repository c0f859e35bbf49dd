"""What the listener does with one document: the trigger rules of contract §4 and §15, in Python.

The listener never trusts what a change event says about the document (nx-27017 quirk:
``fullDocument`` is a mangled write-time snapshot and ``updateDescription`` is ``None``); it
re-reads the document by ``documentKey._id`` and decides here, from the document as it is
now. The catch-up scan decides with the same function, so an event and a scan that see the
same document version compute the same job id and can never create two jobs.

Rules, in order (one job per event even when several match: the flag wins):

1. ``DOWNLOAD_FLAG_FIELD`` is set (:func:`is_flagged`) → trigger ``flag``, version =
   ``STATUS_FIELD.job_id`` (the job of the last write-back, or none). A document flagged again
   after its previous download finished has a new version, so it triggers again; the
   service's own write-back sets the flag to false, so it never triggers.
2. ``WATCH_UPDATES``, an update, replace or scan, and the document's last download is known
   (:class:`LastDownload`: the write-back's ``urls_sha256`` and ``path``, or what its
   metadata.json holds when the caller read it, workers/listener/tree.py) → trigger ``update``
   when the URL list (§3) or the folder (the search slug) differs from it, else nothing. The
   version is the target: the new list's hash and folder (:func:`update_version`), so the same
   change seen twice (event and scan, a replayed event, the write-back of a job that planned
   the old list arriving while the update job is active) is one job; a change *back* to a list
   whose job has ended continues the version chain (workers/listener/enqueue.py).
3. the operation is an insert or a scan (or, with ``WATCH_UPDATES``, an update of a document
   never downloaded: "handled as an insert would be"), ``WATCH_INSERTS`` is on, the document
   has at least one image URL and no finished ``STATUS_FIELD`` (``status`` missing) → trigger
   ``insert``, no version (a document is inserted once; a re-insert after a delete gets a
   version from the delete, workers/listener/enqueue.py). Requiring "no status" makes a
   replayed insert event of an already downloaded document a no-op.

The flag rule, the same for events and for the catch-up scan's server filter: the flag is set
when its value is the boolean ``true`` or the number 1 (``1``, ``1.0``, Int64, Decimal128),
or, as the server matches a query value against array elements, an array holding one of
those. ``false``, ``0``, ``"true"``, ``null`` and a missing field never count. Numbers count
because nx-27017 stores a boolean set by a top-level ``$set`` as ``1``; on MongoDB
``{f: true}`` does not match ``1``, hence the scan's ``{f: {"$in": [true, 1]}}``.

The job id is a hash of (database, collection, ``_id``, trigger, version): the idempotency key.
(A flagged document whose version did not change since a job of that version ended, e.g. it
was replaced without the status field after a download, or flagged again after a cancelled
or failed job, carries a stale version; workers/listener/enqueue.py continues the version.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import Decimal128, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from images_service.config.settings import Settings
from images_service.download.planning import folder_of
from images_service.download.urls import extract_image_urls, url_list_sha256
from images_service.errors import UnsafePathError
from images_service.jobs.projection import top_level_projection

#: Triggers recorded on change_stream jobs (``source.trigger``).
INSERT, FLAG, UPDATE = "insert", "flag", "update"
#: Operations a decision can be asked about: change events plus the catch-up scan.
SCAN = "scan"
#: Bumped if the key layout ever changes (old keys then simply stop matching).
KEY_VERSION = "v1"
#: Flag values the server filter matches: ``true``, and the number 1 of any numeric type.
FLAG_VALUES = [True, 1]


@dataclass(frozen=True)
class Decision:
    """A document needs a job: which trigger, which version of the document, which job id."""

    trigger: str
    version: str | None
    job_id: str


@dataclass(frozen=True)
class LastDownload:
    """What a document's last download left in the tree: its folder and its URL list.

    From the write-back (``urls_sha256``: the list as that job planned it) or from the
    folder's metadata.json (``urls``: the URL recorded at each index, ``None`` where nothing is
    recorded yet, e.g. while the download runs; the list's length is the plan's total).
    """

    path: str
    urls_sha256: str | None = None
    urls: tuple[str | None, ...] | None = None

    def differs(self, urls: Sequence[str], path: str) -> bool:
        """The document with ``urls`` in folder ``path`` is not what was downloaded."""
        if path != self.path:
            return True
        if self.urls_sha256 is not None:
            return url_list_sha256(urls) != self.urls_sha256
        known = self.urls or ()
        # An index not recorded yet cannot be told apart: it counts as unchanged.
        return len(known) != len(urls) or any(
            url is not None and url != urls[i] for i, url in enumerate(known))


def field_value(doc: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path``, nested or (nx-27017 quirk) stored under a flat dotted key.

    nx-27017 answers a projection on ``a.b`` with a flat key ``"a.b"``; MongoDB nests it.
    """
    current: Any = doc
    for segment in path.split("."):
        if isinstance(current, Mapping) and segment in current:
            current = current[segment]
        else:
            current = None
            break
    if current is None and "." in path and isinstance(doc, Mapping):
        return doc.get(path)
    return current


def _is_flag_value(value: Any) -> bool:
    """``value`` equals an element of :data:`FLAG_VALUES` the way the server compares."""
    if isinstance(value, bool):  # before the numbers: False must not equal 0 here, nor 1 True
        return value
    if isinstance(value, (int, float)):  # bson.Int64 is an int
        return value == 1
    if isinstance(value, Decimal128):
        return value.to_decimal() == 1
    return False


def is_flagged(doc: Mapping[str, Any], settings: Settings) -> bool:
    """The flag rule (module docstring): exactly what ``{flag: {"$in": FLAG_VALUES}}`` matches.

    nx-27017 quirk: a boolean set by a top-level ``$set`` reads back as ``1``, so never
    ``is True``.
    """
    value = field_value(doc, settings.download_flag_field)
    if isinstance(value, list):  # the server matches $in against array elements too
        return any(_is_flag_value(element) for element in value)
    return _is_flag_value(value)


def status_of(doc: Mapping[str, Any], settings: Settings) -> Mapping[str, Any] | None:
    if not settings.status_field:
        return None
    value = field_value(doc, settings.status_field)
    return value if isinstance(value, Mapping) else None


def is_finished(doc: Mapping[str, Any], settings: Settings) -> bool:
    """The service wrote a finished status back (``STATUS_FIELD.status`` present)."""
    status = status_of(doc, settings)
    return status is not None and status.get("status") is not None


def written_back(doc: Mapping[str, Any], settings: Settings) -> LastDownload | None:
    """The last download as the write-back describes it; None when it does not (no
    write-back, or one written before ``urls_sha256`` was recorded)."""
    status = status_of(doc, settings)
    if not status or status.get("status") is None:
        return None
    sha, path = status.get("urls_sha256"), status.get("path")
    if isinstance(sha, str) and isinstance(path, str):
        return LastDownload(path, urls_sha256=sha)
    return None


def version_of(doc: Mapping[str, Any], settings: Settings) -> str | None:
    status = status_of(doc, settings)
    job_id = status.get("job_id") if status else None
    return str(job_id) if job_id is not None else None


def job_id_for(database: str, collection: str, source_id: Any, trigger: str,
               version: str | None) -> str:
    """The deterministic job id (32 hex digits, like the api's uuid4 ids)."""
    canonical_id = json_util.dumps(source_id, json_options=CANONICAL_JSON_OPTIONS)
    key = "\x1f".join((KEY_VERSION, database, collection, canonical_id, trigger, version or ""))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def update_version(urls: Sequence[str], path: str) -> str:
    """The version of an update job: what the change leads to (list and folder)."""
    return f"{url_list_sha256(urls)}:{path}"


def _insert_rule(doc: Mapping[str, Any], settings: Settings) -> bool:
    return settings.watch_inserts and not is_finished(doc, settings) and \
        bool(extract_image_urls(doc, settings.image_fields))


def _update_rule(doc: Mapping[str, Any], database: str, collection: str, settings: Settings,
                 last: LastDownload) -> Decision | None:
    try:
        path = folder_of(doc, database, collection, settings)
    except UnsafePathError:  # names no folder: nothing in the tree can be out of step
        return None
    urls = extract_image_urls(doc, settings.image_fields)
    if not last.differs(urls, path):
        return None
    version = update_version(urls, path)
    return Decision(UPDATE, version, job_id_for(database, collection, doc["_id"], UPDATE, version))


def decide(doc: Mapping[str, Any] | None, operation: str, database: str, collection: str,
           settings: Settings, *, last: LastDownload | None = None) -> Decision | None:
    """The job ``doc`` needs after ``operation`` (insert, update, replace or scan), or None.

    ``last`` is the document's last download as its metadata.json tells, for a caller that
    read it (workers/listener/tree.py); the write-back's own record wins over it.
    """
    if doc is None:  # deleted before we could read it
        return None
    if is_flagged(doc, settings):
        trigger, version = FLAG, version_of(doc, settings)
    elif operation == "insert":
        if not _insert_rule(doc, settings):
            return None
        trigger, version = INSERT, None
    else:  # update, replace or scan
        previous = (written_back(doc, settings) or last) if settings.watch_updates else None
        if previous is not None:
            return _update_rule(doc, database, collection, settings, previous)
        if not (operation == SCAN or settings.watch_updates) or not _insert_rule(doc, settings):
            return None
        trigger, version = INSERT, None
    job_id = job_id_for(database, collection, doc["_id"], trigger, version)
    return Decision(trigger, version, job_id)


def scan_filter(settings: Settings) -> dict[str, Any]:
    """Server-side filter of the catch-up scan: flagged, never downloaded with images, or (with
    ``WATCH_UPDATES``) written back with a ``urls_sha256`` to compare the document with.

    Works on MongoDB and nx-27017 (``$or``, ``$exists`` on a dotted path and ``$in`` all match
    there). The flag half matches what :func:`is_flagged` accepts; nx-27017 quirk: its
    ``{f: {"$in": [...]}}`` alone (not inside ``$or``) also matches a subdocument holding the
    value 1, a candidate :func:`decide_scanned` then rejects. With ``STATUS_FIELD`` empty a
    finished download cannot be told apart, so only flagged documents are scanned (README:
    listener). The update half returns every downloaded document: whether its URL list or
    folder changed can only be computed in Python (a hash), so it costs a pass over them.
    """
    flagged = {settings.download_flag_field: {"$in": FLAG_VALUES}}
    if not settings.status_field:
        return flagged
    parts: list[dict[str, Any]] = [flagged]
    if settings.watch_inserts:
        has_images = [{path: {"$exists": True}} for path in settings.image_fields]
        pending = {f"{settings.status_field}.status": {"$exists": False}}
        parts.append({"$and": [pending, {"$or": has_images}]} if has_images else pending)
    if settings.watch_updates:
        parts.append({f"{settings.status_field}.urls_sha256": {"$exists": True}})
    return {"$or": parts} if len(parts) > 1 else flagged


def scan_projection(settings: Settings) -> dict[str, int]:
    """Top-level fields a decision needs (images_service/jobs/projection.py: nx-27017 returns a
    dotted projection as a flat key)."""
    return top_level_projection([*settings.image_fields, settings.download_flag_field,
                                 settings.status_field,
                                 settings.search_field if settings.watch_updates else ""])


def decide_scanned(doc: Mapping[str, Any], database: str, collection: str,
                   settings: Settings) -> Decision | None:
    """A document found by the catch-up scan (same rules, operation ``scan``)."""
    if not settings.status_field and not is_flagged(doc, settings):
        return None  # see scan_filter: without write-back only flags are backfilled
    return decide(doc, SCAN, database, collection, settings)
