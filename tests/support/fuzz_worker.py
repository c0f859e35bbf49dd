"""The fuzz corpus through a real worker: served over loopback HTTP, one collection job.

:func:`serve` puts corpus files on a real :class:`~tests.support.image_server.ImageServer`;
:func:`documents` groups them into documents of ``per_doc`` corpus files plus one good image
at a seeded position; :func:`run` inserts them, runs a REST collection job against a worker
already started with the fuzz settings and checks contract §14 on what it left
(:func:`check`): the job completed, every image of every document is ``downloaded`` or
``failed`` with a §6 code (``processing_failed`` only for a variant), the good image of each
document is downloaded with every variant, each corpus file got the answer the direct layer
gives it (same validation, in the worker), no file in the tree that a ``metadata.json`` does
not name, every named file there with its recorded sha256, no traceback in the worker's log.
Run again over the same tree, stored images are ``skipped`` and their variants made from the
stored originals (or recorded ``processing_failed``), with the same checks.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from images_service.config.settings import Settings
from tests.support.fuzz_corpus import CONTENT_TYPES, FuzzFile
from tests.support.image_server import ImageServer, make_image
from tests.support.pipeline import api_client, source_db, wait_job

#: Contract §6: the codes of a failed image (``http_<status>`` besides).
IMAGE_CODES = frozenset({
    "timeout", "connection_error", "too_large", "not_an_image", "corrupt_image",
    "decompression_bomb", "blocked_address", "invalid_url", "too_many_redirects", "cancelled",
    "folder_conflict", "robots_disallowed", "opted_out"})
_HTTP_CODE = re.compile(r"http_[1-5][0-9][0-9]")
_STORED = ("downloaded", "skipped")
DATABASE = "serpy_db"


def is_image_code(code: object) -> bool:
    return isinstance(code, str) and (code in IMAGE_CODES or bool(_HTTP_CODE.fullmatch(code)))


@dataclass
class Document:
    """A document of the run: its corpus files and where its good image is."""

    doc_id: str
    urls: list[str]
    good_index: int  #: 1-based index of the good image among ``urls``
    files: dict[int, FuzzFile]  #: 1-based index -> the corpus file there


@dataclass
class WorkerRun:
    """What one job made of its documents."""

    files: int = 0
    documents: int = 0
    seconds: float = 0.0
    job: dict[str, Any] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)  #: corpus files: downloaded, skipped, code
    variants: Counter = field(default_factory=Counter)  #: made / processing_failed
    problems: list[str] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0


def url_path(item: FuzzFile) -> str:
    return f"/fuzz/{item.name.replace('+', '.')}{item.extension}"


def serve(server: ImageServer, items: Sequence[FuzzFile]) -> dict[int, str]:
    """Serve each file at its own path; returns corpus index -> URL."""
    urls = {}
    for item in items:
        path = url_path(item)
        server.set_response(path, 200, item.data, {"Content-Type": CONTENT_TYPES[item.format]})
        urls[item.index] = server.url(path)
    return urls


def documents(server: ImageServer, items: Sequence[FuzzFile], *, per_doc: int,
              prefix: str = "f") -> list[Document]:
    """Documents of ``per_doc`` corpus files each, plus one good image at a seeded place."""
    urls = serve(server, items)
    rng = random.Random(f"documents/{prefix}/{len(items)}")
    docs = []
    for number, start in enumerate(range(0, len(items), per_doc)):
        chunk = list(items[start:start + per_doc])
        good_index = rng.randrange(len(chunk) + 1) + 1
        good_path = f"/fuzz/good/{prefix}{number}.png"
        server.set_response(good_path, 200, make_image("PNG", 64, 48, number),
                            {"Content-Type": "image/png"})
        doc_urls = [urls[item.index] for item in chunk]
        doc_urls.insert(good_index - 1, server.url(good_path))
        files = {i: item for i, item in enumerate(chunk, start=1)}
        files = {(i if i < good_index else i + 1): item for i, item in files.items()}
        docs.append(Document(f"{prefix}{number:04d}", doc_urls, good_index, files))
    return docs


def outcome_of(answer: str) -> str:
    """The record a direct layer's answer (``ok`` or a code) becomes in a first download."""
    return "downloaded" if answer == "ok" else answer


def run(settings: Settings, docs: Sequence[Document], collection: str, worker_log: Path, *,
        expected: dict[int, str] | None = None, timeout_s: float = 300) -> WorkerRun:
    """Insert ``docs``, run one collection job to its end, check everything it left.

    ``expected``: corpus index -> the outcome its record must show (``downloaded``,
    ``skipped`` or an error code), from the direct layer's answers.
    """
    hotels = source_db(settings, DATABASE)[collection]
    hotels.drop()
    hotels.insert_many([{"_id": d.doc_id, "name": f"Fuzz {d.doc_id}", "images": d.urls}
                        for d in docs])
    client = api_client(settings)
    started_s = time.monotonic()
    response = client.post(f"/api/v1/download/collection/{DATABASE}/{collection}")
    job = wait_job(client, response.json["job_id"], timeout_s=timeout_s)
    result = WorkerRun(files=sum(len(d.files) for d in docs), documents=len(docs),
                       seconds=time.monotonic() - started_s, job=job)
    check(settings, docs, collection, result, expected or {})
    log = worker_log.read_text(errors="replace")
    if "Traceback" in log:
        at = log.index("Traceback")
        result.problems.append(f"a traceback in the worker's log:\n{log[max(0, at - 300):][:3300]}")
    return result


def check(settings: Settings, docs: Sequence[Document], collection: str, result: WorkerRun,
          expected: dict[int, str]) -> None:
    """Contract §14 on the job and the tree; adds to ``result``'s outcomes and problems."""
    problems = result.problems
    job = result.job
    progress = job.get("progress", {})
    total = sum(len(d.urls) for d in docs)
    if job.get("status") != "completed":
        problems.append(f"job {job.get('status')}: {job.get('message')}")
    if (progress.get("images_total"), progress.get("documents_done")) != (total, len(docs)):
        problems.append(f"progress {progress}, expected {total} images of {len(docs)} documents")
    done = sum(progress.get(f"images_{kind}", 0) for kind in ("downloaded", "skipped", "failed"))
    if done != total:
        problems.append(f"progress {progress}: not every image downloaded, skipped or failed")
    root = settings.storage_path / DATABASE / collection
    metas = {}
    for path in root.rglob("metadata.json"):
        meta = json.loads(path.read_text())
        metas[meta["document_id"]] = (path.parent, meta)
    named: set[Path] = set()
    for doc in docs:
        if doc.doc_id not in metas:
            problems.append(f"{doc.doc_id}: no metadata.json")
            continue
        folder, meta = metas[doc.doc_id]
        named.add(folder / "metadata.json")
        records = {r.get("index"): r for r in meta.get("images", [])}
        if sorted(records) != list(range(1, len(doc.urls) + 1)):
            problems.append(f"{doc.doc_id}: records {sorted(records)} for {len(doc.urls)} URLs")
        for index, record in records.items():
            item = doc.files.get(index)
            name = item.name if item else f"{doc.doc_id} good image"
            problems.extend(f"{name}: {p}" for p in _check_record(folder, record, named))
            outcome = (record.get("status") if record.get("status") != "failed"
                       else (record.get("error") or {}).get("code"))
            for entry in (record.get("processed") or {}).values():
                result.variants["made" if "file" in entry else entry["error"]["code"]] += 1
            if item is None:
                if outcome not in _STORED or not all(
                        "file" in e for e in (record.get("processed") or {}).values()):
                    problems.append(f"{doc.doc_id}: the good image got {record}")
                continue
            result.outcomes[outcome] += 1
            want = expected.get(item.index)
            if want is not None and outcome != want:
                problems.append(f"{name}: the worker says {outcome}, the direct layer {want}")
    present = {p for p in root.rglob("*") if p.is_file()}
    for extra in sorted(present - named):
        problems.append(f"a file no metadata.json names: {extra.relative_to(root)}")


def _check_record(folder: Path, record: dict[str, Any], named: set[Path]) -> list[str]:
    status = record.get("status")
    if status == "failed":
        code = (record.get("error") or {}).get("code")
        problems = [] if is_image_code(code) else [f"failed with code {code!r}"]
        if "processed" in record:
            problems.append("a failed image has variants")
        return problems
    if status not in _STORED:
        return [f"status {status!r}"]
    problems = _check_file(folder, record, named)
    for variant, entry in (record.get("processed") or {}).items():
        if "file" in entry:
            problems.extend(f"variant {variant}: {p}" for p in _check_file(folder, entry, named))
        elif (entry.get("error") or {}).get("code") != "processing_failed":
            problems.append(f"variant {variant}: {entry}")
    return problems


def _check_file(folder: Path, entry: dict[str, Any], named: set[Path]) -> list[str]:
    path = folder / entry["file"]
    named.add(path)
    if not path.is_file():
        return [f"{entry['file']} is missing"]
    data = path.read_bytes()
    if (hashlib.sha256(data).hexdigest(), len(data)) != (entry.get("sha256"), entry.get("bytes")):
        return [f"{entry['file']}: sha256 or size is not the recorded one"]
    return []
