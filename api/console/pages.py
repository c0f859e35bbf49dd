"""What the console's pages show, computed from the service functions (kept out of the views).

Progress bars are built here once, for the templates and for the JSON the progress script
polls, so both always say the same. A job's documents are the rows the pipeline wrote for it
when each document finished (images_service/jobs/documents.py), in natural order of their
ids, plus, for document and change-stream jobs, their one document. Thumbnails prefer the
smallest processed variant (§12) and fall back to the original, which the browser scales down.
A document's placeholders and near-duplicates (§18) are listed apart from the images it shows,
with their reason or the image they repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from bson import json_util
from pymongo.errors import PyMongoError

from images_service.config.settings import Settings
from images_service.documents import DocumentFiles, StoredDocument, listed_files
from images_service.errors import Unavailable
from images_service.jobs.documents import JobDocuments
from images_service.jobs.outcome import outcome
from images_service.jobs.store import ACTIVE
from images_service.storage import layout

#: Source documents listed per page of a job.
DOCUMENTS_PER_PAGE = 12


@dataclass(frozen=True)
class Bar:
    """One progress bar: ``value`` of ``max`` and the text said next to it."""

    value: int
    max: int
    text: str

    @property
    def percent(self) -> int:
        return round(100 * self.value / self.max) if self.max else 0


def _bar(done: int, total: int, noun: str, completed: bool, detail: str = "") -> Bar:
    if total <= 0:
        # Nothing to do (or not counted yet): full once the job completed, empty otherwise.
        value = 1 if completed else 0
        return Bar(value, 1, f"0 of 0 {noun}" + (" (100 %)" if completed else "") + detail)
    done = min(done, total)
    percent = round(100 * done / total)
    return Bar(done, total, f"{done} of {total} {noun} ({percent} %){detail}")


def progress_bars(job: Mapping[str, Any]) -> dict[str, Bar]:
    """The documents and images bars of an API job (``job_to_api`` form)."""
    p = job["progress"]
    completed = job["status"] == "completed"
    # A refresh job (§16) counts its re-checks' outcomes beside downloaded/skipped/failed.
    refresh = [(name, label) for name, label in (
        ("images_not_modified", "not modified"), ("images_changed", "changed"),
        ("images_missing", "missing"), ("images_gone", "gone")) if name in p]
    images_done = (p["images_downloaded"] + p["images_skipped"] + p["images_failed"]
                   + sum(p[name] for name, _ in refresh))
    parts = [f"{p['images_downloaded']} downloaded", f"{p['images_skipped']} skipped",
             *(f"{p[name]} {label}" for name, label in refresh), f"{p['images_failed']} failed"]
    detail = ": " + ", ".join(parts)
    return {
        "documents": _bar(p["documents_done"], p["documents_total"], "documents", completed),
        "images": _bar(images_done, p["images_total"], "images", completed, detail),
    }


def live_progress(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job's state as the progress script reads it (``GET /ui/progress.json``)."""
    label, kind = outcome(job)
    return {"status": job["status"], "label": label, "kind": kind,
            "active": job["status"] in ACTIVE,
            "bars": {name: {"value": bar.value, "max": bar.max, "text": bar.text}
                     for name, bar in progress_bars(job).items()}}


@dataclass
class ImageView:
    index: int
    url: str
    status: str
    error_code: str | None = None
    thumbnail: str | None = None  #: a file of the document (``processed/thumb/img_001.webp``)
    original: str | None = None  #: the stored original (``original/img_001.jpg``): the link
    width: int | None = None
    height: int | None = None
    #: The image's source when a re-check found it missing or gone (§16), else None.
    source: str | None = None
    placeholder: str | None = None  #: tiny, blank or known (contract §18)
    duplicate_of: int | None = None  #: the index of the earlier image it repeats

    @property
    def set_apart(self) -> bool:
        """A placeholder or a near-duplicate: listed apart, greyed."""
        return self.placeholder is not None or self.duplicate_of is not None


@dataclass
class DocumentView:
    document_id: str
    folder: str | None  #: None when nothing is stored for it
    images: list[ImageView] = field(default_factory=list)
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> list[ImageView]:
        """The images the document shows (failed ones included, with their code)."""
        return [image for image in self.images if not image.set_apart]

    @property
    def apart(self) -> list[ImageView]:
        """Its placeholders and near-duplicates, in index order."""
        return [image for image in self.images if image.set_apart]


def _thumbnail(record: Mapping[str, Any]) -> tuple[str, int | None, int | None] | None:
    """(file, width, height) of the smallest file listed for an image, or None."""
    best: tuple[int, str, int | None, int | None] | None = None
    for name, _format, entry in listed_files(record):
        width, height = entry.get("width"), entry.get("height")
        area = width * height if isinstance(width, int) and isinstance(height, int) else 1 << 62
        if best is None or area < best[0]:
            best = (area, name, width, height)
    return None if best is None else best[1:]


def document_view(document_id: str, stored: StoredDocument | None) -> DocumentView:
    view = DocumentView(document_id, stored.folder if stored else None)
    if stored is None:
        return view
    view.summary = stored.metadata.get("summary") or {}
    for record in sorted(stored.images(), key=lambda r: r.get("index") or 0):
        image = ImageView(index=int(record.get("index") or 0), url=str(record.get("url", "")),
                          status=str(record.get("status", "")))
        error = record.get("error")
        if isinstance(error, dict):
            image.error_code = error.get("code")
        source = record.get("source")
        if isinstance(source, dict) and source.get("status") in ("missing", "gone"):
            image.source = str(source["status"])
        # metadata.json is the service's own file, but read it as untrusted all the same.
        if isinstance(record.get("placeholder"), str):
            image.placeholder = record["placeholder"]
        duplicate_of = record.get("duplicate_of")
        if isinstance(duplicate_of, int) and not isinstance(duplicate_of, bool):
            image.duplicate_of = duplicate_of
        thumb = _thumbnail(record)
        if thumb:
            image.thumbnail, image.width, image.height = thumb
        if record.get("status") != "failed" and isinstance(record.get("file"), str):
            image.original = record["file"]
        view.images.append(image)
    return view


def job_documents(raw_job: Mapping[str, Any], files: DocumentFiles, settings: Settings,
                  rows: JobDocuments, *, page: int) -> tuple[list[DocumentView], bool]:
    """The documents of a job (one page), and whether another page follows.

    Listed from the job's own rows (``JOBS_DATABASE.job_documents``, through its index), never
    by querying the source collection, whatever its size (contract §14). A document or
    change-stream job shows its one document by ``_id`` (the source's own index) even before
    it finished.
    """
    database, collection = raw_job["database"], raw_job["collection"]
    try:
        if raw_job.get("source"):  # document and change_stream jobs: their one document
            if page != 1:
                return [], False
            projection = {"_id": 1, settings.search_field.split(".")[0]: 1}
            if settings.status_field:
                projection[settings.status_field.split(".")[0]] = 1
            found = files.mongo[database][collection].find_one(
                {"_id": json_util.loads(raw_job["source"]["id"])}, projection)
            if found is None:
                return [], False
            return [document_view(layout.document_id_str(found["_id"]),
                                  files.stored_for_source(database, collection, found))], False
        found_rows = rows.page(raw_job["_id"], skip=(page - 1) * DOCUMENTS_PER_PAGE,
                               limit=DOCUMENTS_PER_PAGE + 1)
    except PyMongoError as exc:
        raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
    more = len(found_rows) > DOCUMENTS_PER_PAGE
    views = [document_view(row["document_id"],
                           files.stored_at(database, collection, row["document_id"], row["folder"]))
             for row in found_rows[:DOCUMENTS_PER_PAGE]]
    return views, more
