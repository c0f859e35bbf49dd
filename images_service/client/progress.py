"""Follow a job until it ends: progress bars on a terminal, one plain line per change otherwise.

The job is polled every ``POLL_INTERVAL_S`` (2 requests a second stay far below the api's
default per-key limit). While following, a transient failure (api restarting, 503, 429) is
asked again for up to ``PATIENCE_S``; anything else ends the wait with the error.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol, TextIO
from urllib.parse import quote

from images_service.client.format import (
    FINISHED,
    counts,
    images_finished,
    printable,
    progress_line,
)
from images_service.client.http import ApiClientError

POLL_INTERVAL_S = 0.5
PATIENCE_S = 30.0


class GetsJson(Protocol):
    def get(self, path: str, **params: Any) -> Any: ...


class JobPoller:
    """Reads the job, tolerating transient failures for ``patience_s`` in a row."""

    def __init__(self, client: GetsJson, job_id: str, *, patience_s: float = PATIENCE_S,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.job_id = client, job_id
        self.patience_s, self.sleep, self.clock = patience_s, sleep, clock

    def read(self) -> dict[str, Any]:
        first_failure: float | None = None
        while True:
            try:
                return self.client.get(f"/jobs/{quote(self.job_id, safe='')}")
            except ApiClientError as exc:
                now = self.clock()
                first_failure = now if first_failure is None else first_failure
                if not exc.transient or now - first_failure >= self.patience_s:
                    raise
                self.sleep(POLL_INTERVAL_S)


def follow(client: GetsJson, job_id: str, out: TextIO, *, terminal: bool | None = None,
           poll_s: float = POLL_INTERVAL_S,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll job ``job_id`` until it is finished, showing its progress; returns the last job."""
    poller = JobPoller(client, job_id, sleep=sleep)
    terminal = out.isatty() if terminal is None else terminal
    if terminal:
        return _follow_with_bars(poller, out, poll_s, sleep)
    return _follow_with_lines(poller, out, poll_s, sleep)


def _follow_with_lines(poller: JobPoller, out: TextIO, poll_s: float,
                       sleep: Callable[[float], None]) -> dict[str, Any]:
    last = None
    while True:
        job = poller.read()
        line = progress_line(job)
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if job["status"] in FINISHED:
            return job
        sleep(poll_s)


def _follow_with_bars(poller: JobPoller, out: TextIO, poll_s: float,
                      sleep: Callable[[float], None]) -> dict[str, Any]:
    # Imported here: only a terminal needs rich.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=out, force_terminal=True)
    # The detail is the server's text: escaped (printable) and never read as rich markup.
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}", markup=False), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        documents = bars.add_task("documents", total=None, detail="")
        images = bars.add_task("images", total=None, detail="")
        while True:
            job = poller.read()
            p = job["progress"]
            # A total of 0 is "not known yet" (the scan is still counting): an indeterminate bar.
            bars.update(documents, completed=p["documents_done"],
                        total=p["documents_total"] or None, detail=printable(job["status"]))
            bars.update(images, completed=images_finished(p), total=p["images_total"] or None,
                        detail=counts(p))
            if job["status"] in FINISHED:
                return job
            sleep(poll_s)
