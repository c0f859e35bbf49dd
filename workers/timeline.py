"""A worker process's timeline for the benchmark: what its threads are doing every 50 ms.

Off unless ``WORKER_TIMELINE_DIR`` is set (then each worker process appends one JSON line per
sample to ``worker-<pid>.jsonl`` there; bench/service_bench.py ``--timeline`` sets it and
bench/timeline_plot.py draws it). Off, the pipeline holds :data:`OFF`, whose ``span`` returns
one shared no-op context manager and whose ``mark`` does nothing: a few hundred nanoseconds per
image against milliseconds of work, and no thread, file or lock.

Why a timeline and not a profile: a profile says where CPU goes; the benchmark's open question
(issue 24) is where the *wall* time goes while the cores are idle, which needs to see, at each
instant, how many threads are waiting for what. Gauges (threads inside a span):

- ``messages``: actor threads inside a ``download_documents``/``retry_image`` message;
- ``opening``: of those, the ones opening their documents' folders (claim, read
  metadata.json) and looking their URLs up in the URL index, before any download starts;
- ``awaiting``: of those, the ones waiting for their message's images (the message boundary:
  a thread waits here for the slowest image of its message before it takes the next one);
- ``finishing``: of those, the ones merging metadata.json and writing back (after the wait);
- ``attempts``: pool threads working on one image (busy; the pool's idle = threads − attempts);
- ``status``: pool threads reading the job's status before starting (cancel check);
- ``claim``: pool threads claiming the URL (fetch once, contract §16: Redis, maybe a copy);
- ``slot_wait``: pool threads waiting for a fleet or host slot (Redis polling);
- ``downloads``: pool threads inside the engine (request, validation, store) with a slot held;
- ``index``: pool threads writing the URL index entry (MongoDB) after a download;
- ``release``: pool threads releasing the URL's claim (Redis);
- ``scan``: threads scanning a job.

Sampled with them: the pool's thread count and queued tasks, and this process's CPU seconds
(``time.process_time``). Marks: first and last time of ``message`` (a message started),
``download_end``, ``scan_start``, ``scan_done``, ``job_completed``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Callable

#: Sampling period (seconds).
INTERVAL_S = 0.05
GAUGES = ("messages", "opening", "awaiting", "finishing", "attempts", "status", "claim",
          "slot_wait", "downloads", "index", "release", "scan")

_NOOP = nullcontext()


class _Span:
    """Counts the threads inside it under ``name``."""

    __slots__ = ("timeline", "name")

    def __init__(self, timeline: Timeline, name: str) -> None:
        self.timeline, self.name = timeline, name

    def __enter__(self) -> None:
        with self.timeline.lock:
            self.timeline.gauges[self.name] += 1

    def __exit__(self, *exc: object) -> None:
        with self.timeline.lock:
            self.timeline.gauges[self.name] -= 1


class NullTimeline:
    """The timeline when it is off: nothing is counted."""

    enabled = False

    def span(self, name: str) -> AbstractContextManager[None]:
        return _NOOP

    def mark(self, name: str) -> None:
        return None

    def start(self, pool: ThreadPoolExecutor, stop: threading.Event,
              probes: dict[str, Callable[[], float]] | None = None) -> None:
        return None


OFF = NullTimeline()


class Timeline(NullTimeline):
    """Gauges and marks of one worker process, written every :data:`INTERVAL_S`."""

    enabled = True

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.lock = threading.Lock()
        self.gauges: dict[str, int] = dict.fromkeys(GAUGES, 0)
        self.marks: dict[str, list[float]] = {}  # name -> [first, last] (epoch seconds)
        self._spans = {name: _Span(self, name) for name in GAUGES}

    def span(self, name: str) -> AbstractContextManager[None]:
        return self._spans[name]

    def mark(self, name: str) -> None:
        now = time.time()
        with self.lock:
            seen = self.marks.get(name)
            if seen is None:
                self.marks[name] = [now, now]
            else:
                seen[1] = now

    def start(self, pool: ThreadPoolExecutor, stop: threading.Event,
              probes: dict[str, Callable[[], float]] | None = None) -> None:
        """Sample on a daemon thread until ``stop`` is set; ``probes``: more values to read at
        each sample (name → function)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.probes = dict(probes or {})
        thread = threading.Thread(target=self._run, args=(pool, stop), daemon=True,
                                  name="timeline")
        thread.start()

    def sample(self, pool: ThreadPoolExecutor) -> dict[str, Any]:
        with self.lock:
            row: dict[str, Any] = dict(self.gauges)
            marks = {k: list(v) for k, v in self.marks.items()}
        row.update({
            "t": time.time(), "pid": os.getpid(), "cpu_s": time.process_time(),
            # The executor's own fields: read only, for the benchmark.
            "pool_threads": len(pool._threads),  # noqa: SLF001
            "pool_queued": pool._work_queue.qsize(),  # noqa: SLF001
            "marks": marks,
        })
        for name, probe in getattr(self, "probes", {}).items():
            row[name] = probe()
        return row

    def _run(self, pool: ThreadPoolExecutor, stop: threading.Event) -> None:
        path = self.directory / f"worker-{os.getpid()}.jsonl"
        with open(path, "a", encoding="utf-8") as out:
            next_at = time.monotonic()
            while not stop.is_set():
                out.write(json.dumps(self.sample(pool)) + "\n")
                out.flush()
                next_at += INTERVAL_S
                stop.wait(max(0.0, next_at - time.monotonic()))
