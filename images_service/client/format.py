"""Jobs as text: progress lines, the final status line, job details and the jobs table.

Pure functions of the job JSON (contract §6), so the command line's output is tested without
an api. Plain text only: terminal decoration (bars, colours) is left to ``progress`` and the
table printer, and only when stdout is a terminal.

Everything here that came from the server (URLs, messages, ids, names: all of it ultimately
from documents and image hosts) goes through :func:`printable` (contract §14 "Surface"): C0
and C1 control characters (ESC, BEL, CR, the one-byte CSI ``\x9b``...), DEL, line
separators and the bidirectional overrides that reorder what a terminal shows are written as
``\x1b`` / ``\u202e`` escapes, so no escape sequence (colours, cursor moves, OSC 8 links,
window titles) and no hidden reordering reaches the operator's terminal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from images_service.jobs.outcome import outcome

FINISHED = ("completed", "failed", "cancelled")
#: Errors shown under a finished job (the job keeps the last 100; `job` shows them all).
ERRORS_SHOWN = 5
TABLE_COLUMNS = ("JOB ID", "TYPE", "STATUS", "SCOPE", "DOCUMENTS", "IMAGES", "FAILED", "CREATED")


#: Bidirectional marks, embeddings, overrides and isolates ("Trojan Source" reordering).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: C0 controls (tab and newline too: a value never spans columns or lines), DEL and C1
#: controls, the line and paragraph separators, and the bidi characters.
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(value: Any) -> str:
    """``value`` as text a terminal shows as it is: control and bidi characters escaped."""
    return _UNSAFE.sub(_escape, "" if value is None else str(value))


def json_text(value: Any) -> str:
    """Indented JSON for ``--json``: ``ensure_ascii`` escapes C0, C1 and bidi characters;
    DEL, the one control character it leaves, is escaped too (still valid JSON)."""
    return json.dumps(value, indent=2, ensure_ascii=True).replace("\x7f", "\\u007f")


#: A refresh job's outcomes (contract §16), beside downloaded / skipped / failed.
REFRESH_COUNTS = (("images_not_modified", "not modified"), ("images_changed", "changed"),
                  ("images_missing", "missing"), ("images_gone", "gone"))


def images_finished(progress: Mapping[str, int]) -> int:
    return (progress["images_downloaded"] + progress["images_skipped"]
            + progress["images_failed"]
            + sum(int(progress.get(name, 0)) for name, _ in REFRESH_COUNTS))


def counts(progress: Mapping[str, int]) -> str:
    """``downloaded 3, skipped 1, failed 0`` (and a refresh job's own counts)."""
    parts = [f"downloaded {progress['images_downloaded']}",
             f"skipped {progress['images_skipped']}"]
    parts += [f"{label} {progress[name]}" for name, label in REFRESH_COUNTS if name in progress]
    parts.append(f"failed {progress['images_failed']}")
    return ", ".join(parts)


def progress_line(job: Mapping[str, Any]) -> str:
    """One line per change while following a job (stdout is not a terminal)."""
    p = job["progress"]
    return printable(f"{job['status']:<9} documents {p['documents_done']}/"
                     f"{p['documents_total']}  images {images_finished(p)}/{p['images_total']} "
                     f"({counts(p)})")


def final_line(job: Mapping[str, Any]) -> str:
    """The last line: the job's status and counts, and why it failed when it did."""
    p = job["progress"]
    line = (f"job {job['job_id']} {outcome(job)[0]}: {p['documents_done']} documents, "
            f"{p['images_downloaded']} images downloaded, {p['images_skipped']} skipped, "
            f"{p['images_failed']} failed")
    if job.get("message"):
        line += f" ({job['message']})"
    return printable(line)


def error_lines(job: Mapping[str, Any], limit: int | None = ERRORS_SHOWN) -> list[str]:
    errors = job.get("errors") or []
    shown = errors if limit is None else errors[-limit:]
    lines = [printable(f"  {e.get('code')}  {e.get('document_id')}  {e.get('url') or ''}"
                       .rstrip()) for e in shown]
    if len(shown) < len(errors):
        lines.insert(0, f"  ... {len(errors) - len(shown)} more errors: "
                        f"images-service job {job['job_id']}")
    return lines


def exit_status(job: Mapping[str, Any]) -> int:
    """0 when the job completed without a failed image, 1 otherwise (contract §13)."""
    ok = job["status"] == "completed" and job["progress"]["images_failed"] == 0
    return 0 if ok else 1


def scope(job: Mapping[str, Any]) -> str:
    text = f"{job['database']}.{job['collection']}"
    if job.get("document_id") is not None:
        text += f"/{job['document_id']}"
    return text


def table_row(job: Mapping[str, Any]) -> tuple[str, ...]:
    p = job["progress"]
    cells = (job["job_id"], job["type"], job["status"], scope(job),
             f"{p['documents_done']}/{p['documents_total']}",
             f"{images_finished(p)}/{p['images_total']}", str(p["images_failed"]),
             job["created_at"] or "")
    return tuple(printable(cell) for cell in cells)


def plain_table(jobs: list[Mapping[str, Any]]) -> list[str]:
    """Tab-separated rows without a header, for pipes (``cut -f1`` gives the ids)."""
    return ["\t".join(table_row(job)) for job in jobs]


def details(job: Mapping[str, Any]) -> list[str]:
    """`images-service job ID`: one field a line, then every error the job kept."""
    p = job["progress"]
    fields: list[tuple[str, Any]] = [
        ("job", job["job_id"]), ("type", job["type"]), ("status", outcome(job)[0]),
        ("scope", scope(job)),
        ("filter", json.dumps(job["filter"]) if "filter" in job else None), ("limit", job.get("limit")),
        ("image fields", ", ".join(job.get("image_fields") or []) or None),
        ("force", "yes" if job.get("force") else None), ("retry of", job.get("retry_of")),
        ("created", job["created_at"]), ("started", job["started_at"]),
        ("finished", job["finished_at"]), ("message", job.get("message")),
        ("documents", f"{p['documents_done']}/{p['documents_total']}"),
        ("images", f"{images_finished(p)}/{p['images_total']} ({counts(p)})"),
    ]
    lines = [printable(f"{name + ':':<13} {value}") for name, value in fields
             if value is not None]
    lines += result_lines(job)
    if job.get("errors"):
        lines.append("errors:")
        lines.extend(error_lines(job, limit=None))
    return lines


def result_lines(job: Mapping[str, Any]) -> list[str]:
    """A reconcile job's result (contract §15): what it did (or, dry run, would do), then
    the example paths."""
    result = job.get("result")
    if job.get("type") != "reconcile" or not isinstance(result, Mapping):
        return []
    verb = "would have " if job.get("dry_run") else ""
    lines = [printable(f"reconcile{' (dry run)' if job.get('dry_run') else ''}: {verb}trashed "
                       f"{result.get('trashed', 0)} folders, {verb}downloaded "
                       f"{result.get('downloaded', 0)} documents, {verb}removed "
                       f"{result.get('removed_files', 0)} files")]
    lines += [printable(f"  {path}") for path in result.get("examples") or []]
    return lines


def placeholder_rows(result: Mapping[str, Any]) -> list[str]:
    """`images-service placeholders`: one tab-separated line per hash (most documents
    first): the hash, its documents, ``known`` or ``-``, and examples as ``id:file``. Ids and
    files come from documents: escaped."""
    lines = []
    for entry in result.get("hashes") or []:
        examples = " ".join(f"{e.get('document_id')}:{e.get('file')}"
                            for e in entry.get("examples") or [])
        cells = (entry.get("phash"), entry.get("documents"),
                 "known" if entry.get("known") else "-", examples)
        lines.append("\t".join(printable(cell) for cell in cells))
    return lines


def placeholder_summary(result: Mapping[str, Any]) -> str:
    """The line under the table on a terminal: what was searched, and what to do next."""
    found = len(result.get("hashes") or [])
    text = (f"{found} hash{'es' if found != 1 else ''} shared by 2 documents or more, among the "
            f"{result.get('scanned')} newest documents of {result.get('database')}."
            f"{result.get('collection')} finished by jobs")
    if found:
        text += "; review the examples, then add the hashes to PLACEHOLDER_HASHES"
    return printable(text)
