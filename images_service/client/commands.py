"""The client subcommands of `images-service`: download, jobs, job, cancel, retry (contract §13),
placeholders (§18), reconcile (§15); trash, restore and purge (§15) in
images_service/client/trash_commands.py.

They talk to the api only (``IMAGES_SERVICE_URL``, ``API_KEY``), so they run anywhere and
never need the server's settings. Exit status: 0 when the job completed without a failed
image (or, without ``--wait``, when the request succeeded), 1 when the job ended failed,
cancelled or with failed images, 2 for usage and API errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable
from urllib.parse import quote

from images_service.client import format as fmt
from images_service.client.http import ApiClient, ApiClientError, ClientSettings
from images_service.client.progress import follow
from images_service.jobs.outcome import outcome

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
JOB_TYPES = ("collection", "document", "batch", "change_stream", "refresh", "reconcile")


class UsageError(Exception):
    """A command line value the api would refuse anyway, caught before any request."""


def _started(client: ApiClient, accepted: dict[str, Any], args: argparse.Namespace,
             note: str = "") -> int:
    """After a 202: say which job, then follow it when asked to."""
    job_id = accepted["job_id"]
    print(fmt.printable(f"job {job_id} {accepted['status']}{note}"), flush=True)
    return _wait(client, job_id) if args.wait else EXIT_OK


def _wait(client: ApiClient, job_id: str) -> int:
    job = follow(client, job_id, sys.stdout)
    for line in fmt.error_lines(job):
        print(line)
    print(fmt.final_line(job), flush=True)
    return fmt.exit_status(job)


def _filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--filter is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--filter must be a JSON object, e.g. '{\"city\": \"Madrid\"}'")
    return value


def _path(*segments: str) -> str:
    # Names go into the URL as single path segments, whatever characters they hold (the api
    # refuses unsafe names with its own message).
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def cmd_download(client: ApiClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"force": args.force}
    if args.target == "collection":
        body["filter"] = _filter(args.filter)
        body["limit"] = args.limit
        path = _path("download", "collection", args.database, args.collection)
    else:
        path = _path("download", "document", args.database, args.collection, args.document_id)
    return _started(client, client.post(path, {k: v for k, v in body.items() if v is not None}),
                    args)


def cmd_refresh(client: ApiClient, args: argparse.Namespace) -> int:
    """Re-check the stored images of a collection (contract §16)."""
    body: dict[str, Any] = {"filter": _filter(args.filter), "limit": args.limit,
                            "older_than_days": args.older_than_days}
    path = _path("refresh", args.database, args.collection)
    return _started(client, client.post(path, {k: v for k, v in body.items() if v is not None}),
                    args)


def cmd_reconcile(client: ApiClient, args: argparse.Namespace) -> int:
    """Compare a collection with its tree (contract §15); with --wait, print the result."""
    body = {"dry_run": True} if args.dry_run else {}
    accepted = client.post(_path("reconcile", args.database, args.collection), body)
    status = _started(client, accepted, args, note=" (dry run)" if args.dry_run else "")
    if args.wait:
        for line in fmt.result_lines(client.get(_path("jobs", accepted["job_id"]))):
            print(line)
    return status


def cmd_jobs(client: ApiClient, args: argparse.Namespace) -> int:
    page = client.get("/jobs", status=args.status, type=args.type, limit=args.limit)
    if args.json:
        print(fmt.json_text(page))
    elif sys.stdout.isatty():
        _print_rich_table(page)
    else:
        for line in fmt.plain_table(page["jobs"]):
            print(line)
    return EXIT_OK


def _print_rich_table(page: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*fmt.TABLE_COLUMNS, box=None, header_style="bold")
    for job in page["jobs"]:
        # Text, not str: a cell is never read as rich markup ("[link=…]" would become an
        # OSC 8 hyperlink), and fmt.table_row has escaped its control characters.
        cells = list(fmt.table_row(job))
        label, kind = outcome(job)  # "completed with N failed" in amber for a person
        cells[2] = fmt.printable(label)
        table.add_row(*(Text(cell, style="yellow" if kind == "partial" and n == 2 else "")
                        for n, cell in enumerate(cells)))
    console = console or Console()
    console.print(table)
    console.print(Text(fmt.printable(f"{len(page['jobs'])} of {page['total']} jobs"),
                       style="dim"))


def cmd_job(client: ApiClient, args: argparse.Namespace) -> int:
    if args.wait:
        return _wait(client, args.job_id)
    job = client.get(_path("jobs", args.job_id))
    print(fmt.json_text(job) if args.json else "\n".join(fmt.details(job)))
    # A finished job exits as `job ID --wait` would: 0 only when it completed without a
    # failed image; a job still running is not a failure (yet).
    return fmt.exit_status(job) if job["status"] in fmt.FINISHED else EXIT_OK


def cmd_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    print(fmt.final_line(client.post(_path("jobs", args.job_id, "cancel"))))
    return EXIT_OK


def cmd_retry(client: ApiClient, args: argparse.Namespace) -> int:
    accepted = client.post(_path("jobs", args.job_id, "retry"))
    return _started(client, accepted, args, note=f" (retry of {args.job_id})")


def cmd_placeholders(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.get(_path("placeholders", args.database, args.collection), top=args.top,
                        scan=args.scan)
    print_listing(result, args, "PHASH\tDOCUMENTS\tKNOWN\tEXAMPLES (document id:file)",
                  fmt.placeholder_rows, fmt.placeholder_summary)
    return EXIT_OK


def print_listing(result: dict[str, Any], args: argparse.Namespace, header: str,
                  rows: Callable[[dict[str, Any]], list[str]],
                  closing: Callable[[dict[str, Any]], str]) -> None:
    """A listing command's output: the API's JSON with ``--json``; else tab-separated rows,
    with a header and a closing line on a terminal only (piped, ``cut -f1`` gives the keys)."""
    if args.json:
        print(fmt.json_text(result))
        return
    terminal = sys.stdout.isatty()
    if terminal:
        print(header)
    for line in rows(result):
        print(line)
    if terminal:
        print(closing(result))


def run(handler: Callable[[ApiClient, argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a client command; errors become a message on stderr and exit status 2."""
    client = ApiClient(ClientSettings.from_env())
    try:
        return handler(client, args)
    except (ApiClientError, UsageError) as exc:
        # The message may quote the server's (a document's URL, a host's error): escaped.
        print(f"images-service: {fmt.printable(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if getattr(args, "wait", False):
            print("images-service: stopped waiting; the job goes on", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    """Register the client subcommands; each sets ``client_command`` (no server settings)."""

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.set_defaults(func=lambda args: run(handler, args), client_command=True)
        return parser

    def wait_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--wait", action="store_true",
                            help="follow the job until it ends (exit 0 only if it completed "
                                 "without a failed image)")

    download = command("download", cmd_download, "start a download job through the api")
    targets = download.add_subparsers(dest="target", metavar="TARGET", required=True)
    coll = targets.add_parser("collection", help="every document of a collection")
    coll.add_argument("database")
    coll.add_argument("collection")
    coll.add_argument("--filter", help="MongoDB query as JSON (Extended JSON: $oid, $date)")
    coll.add_argument("--limit", type=int, help="at most this many documents")
    doc = targets.add_parser("document", help="one document")
    doc.add_argument("database")
    doc.add_argument("collection")
    doc.add_argument("document_id", metavar="ID")
    for parser in (coll, doc):
        parser.add_argument("--force", action="store_true", help="download stored images again")
        wait_flag(parser)

    refresh = command("refresh", cmd_refresh,
                      "re-check stored images at their source (conditional requests)")
    refresh.add_argument("database")
    refresh.add_argument("collection")
    refresh.add_argument("--older-than-days", type=float, dest="older_than_days",
                         help="only images not checked for this many days (default: all)")
    refresh.add_argument("--filter", help="MongoDB query as JSON (Extended JSON: $oid, $date)")
    refresh.add_argument("--limit", type=int, help="at most this many documents")
    wait_flag(refresh)

    reconcile = command("reconcile", cmd_reconcile,
                        "compare a collection with its tree: trash folders of deleted "
                        "documents, download changed or missing ones, remove stray files")
    reconcile.add_argument("database")
    reconcile.add_argument("collection")
    reconcile.add_argument("--dry-run", action="store_true", dest="dry_run",
                           help="change nothing; report what it would do")
    wait_flag(reconcile)

    jobs = command("jobs", cmd_jobs, "list jobs, newest first")
    jobs.add_argument("--status", choices=JOB_STATUSES)
    jobs.add_argument("--type", choices=JOB_TYPES)
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 500)")
    jobs.add_argument("--json", action="store_true", help="print the api's JSON")

    job = command("job", cmd_job, "show one job")
    job.add_argument("job_id", metavar="JOB_ID")
    job.add_argument("--json", action="store_true", help="print the api's JSON")
    wait_flag(job)

    cancel = command("cancel", cmd_cancel, "cancel a pending or running job")
    cancel.add_argument("job_id", metavar="JOB_ID")

    retry = command("retry", cmd_retry, "start a new job with the scope of a finished one")
    retry.add_argument("job_id", metavar="JOB_ID")
    wait_flag(retry)

    candidates = command("placeholders", cmd_placeholders,
                         "list the image hashes shared by the most documents of a collection "
                         "(candidates for PLACEHOLDER_HASHES)")
    candidates.add_argument("database")
    candidates.add_argument("collection")
    candidates.add_argument("--top", type=int, default=20,
                            help="how many hashes (default 20, at most 200)")
    candidates.add_argument("--scan", type=int, default=None,
                            help="count over this many of the newest documents finished by "
                                 "jobs (default 10000, at most 100000)")
    candidates.add_argument("--json", action="store_true", help="print the api's JSON")

    # Imported here: that module builds on this one's helpers.
    from images_service.client.trash_commands import add_trash_commands

    add_trash_commands(command)
