"""Finding placeholder candidates across a collection (contract §18): the pHashes shared by
the most documents, for an operator to review and add to ``PLACEHOLDER_HASHES``.

A "no photo available" image shared by thousands of listings shows itself as one hash met in
many documents, whether those documents name one URL (fetched once, §16, then copied) or
each their own. So the count is of *documents*, not of URLs or files.

Where the hashes come from. Never from the source collection, nor from the metadata.json
of every folder (both unbounded in the request path): the pipeline keeps, on each finished
document's row in ``JOBS_DATABASE.job_documents`` (:mod:`images_service.jobs.documents`),
the distinct hashes of its stored images (:func:`document_hashes`). A search reads the
newest ``scan`` rows of the collection through the index ``(database, collection,
finished_at)`` — one query, at most ``scan`` small rows — keeps each document's newest row
(a document finished by several jobs counts once) and counts in Python. Its cost is
therefore bounded by ``scan`` whatever the collection's size (on nx-27017 about 0.1 s per
1,000 rows, three quarters of it the read; see the README), and it sees the documents
finished within ``JOB_RETENTION_DAYS`` (the rows expire with their jobs): run a job over the
collection first if it has not been downloaded since.

What is counted: images neither ``tiny`` nor ``blank`` (those are placeholders already, and
every blank frame has nearly one hash, which would top every list) and not a near-duplicate
within their document; ``known`` placeholders are counted and flagged, so that the list
also shows how far a configured hash reaches. Hashes are grouped exactly: the same file
always has the same hash; re-encodings of one placeholder may appear as separate, nearby
hashes, any one of which covers the others within 4 bits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.errors import PyMongoError

from images_service.content.bits import parse_hex
from images_service.content.document import DUPLICATE_OF, PHASH, PLACEHOLDER
from images_service.content.placeholders import BLANK, TINY, is_known
from images_service.errors import Unavailable
from images_service.jobs.documents import JobDocuments

#: Statuses whose image is stored (contract §6).
_STORED = ("downloaded", "skipped")
#: Examples given per hash.
EXAMPLES = 5
#: A hash met in fewer documents than this is no candidate.
MIN_DOCUMENTS = 2
#: Bounds of the search's parameters.
DEFAULT_TOP, MAX_TOP = 20, 200
DEFAULT_SCAN, MAX_SCAN = 10_000, 100_000
#: The rows' read waits at most this long (milliseconds): a quick 503, never a hung request.
SEARCH_MAX_TIME_MS = 10_000


def document_hashes(records: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``[{"phash", "file"}]``: the distinct hashes of a document's marked records that a
    search counts (see the module docstring), each with the first file that has it."""
    found: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.get("index") or 0):
        phash, file = record.get(PHASH), record.get("file")
        if (record.get("status") not in _STORED or record.get(PLACEHOLDER) in (TINY, BLANK)
                or DUPLICATE_OF in record or parse_hex(phash) is None
                or not isinstance(file, str)):
            continue
        found.setdefault(phash.lower(), file)
    return [{"phash": phash, "file": file} for phash, file in found.items()]


def rank_hashes(rows: Iterable[Mapping[str, Any]], *, top: int,
                known_hashes: tuple[int, ...] = ()) -> dict[str, Any]:
    """Count the hashes of ``rows`` (newest first, as ``JobDocuments.newest_of_collection``
    reads them) by document; the ``top`` met in at least :data:`MIN_DOCUMENTS` documents.

    Returns ``{"scanned": documents looked at, "hashes": [{"phash", "documents", "known",
    "examples": [{"document_id", "file"}]}]}``, most documents first (ties by hash).
    """
    seen: set[str] = set()
    counts: dict[str, int] = {}
    examples: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        folder = row.get("folder")
        if not isinstance(folder, str) or folder in seen:
            continue  # an older row of a document already counted
        seen.add(folder)
        hashes = row.get("hashes")
        for entry in hashes if isinstance(hashes, list) else ():
            phash = entry.get("phash") if isinstance(entry, Mapping) else None
            if parse_hex(phash) is None:
                continue
            counts[phash] = counts.get(phash, 0) + 1
            shown = examples.setdefault(phash, [])
            if len(shown) < EXAMPLES:
                shown.append({"document_id": str(row.get("document_id", "")),
                              "file": str(entry.get("file", ""))})
    ranked = sorted((item for item in counts.items() if item[1] >= MIN_DOCUMENTS),
                    key=lambda item: (-item[1], item[0]))[:top]
    return {"scanned": len(seen), "hashes": [
        {"phash": phash, "documents": documents,
         "known": is_known(int(phash, 16), known_hashes), "examples": examples[phash]}
        for phash, documents in ranked]}


def placeholder_candidates(rows: JobDocuments, database: str, collection: str, *,
                           top: int = DEFAULT_TOP, scan: int = DEFAULT_SCAN,
                           known_hashes: tuple[int, ...] = ()) -> dict[str, Any]:
    """The search behind ``GET /placeholders/{db}/{coll}`` and ``images-service
    placeholders``: :func:`rank_hashes` of the newest ``scan`` rows of the collection.

    Raises Unavailable when MongoDB does not answer (or the read outlives its time limit).
    """
    try:
        found = rows.newest_of_collection(database, collection, limit=scan,
                                          max_time_ms=SEARCH_MAX_TIME_MS)
    except PyMongoError as exc:
        raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
    return {"database": database, "collection": collection, "scan": scan,
            **rank_hashes(found, top=top, known_hashes=known_hashes)}
