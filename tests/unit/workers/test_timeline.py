"""The benchmark's worker timeline (workers/timeline.py): off, nothing is counted or written;
on, every sample carries the gauges of the threads inside each span, and the marks."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from workers.timeline import OFF, Timeline


def test_off_counts_nothing_and_starts_no_thread(tmp_path) -> None:
    before = threading.active_count()
    with OFF.span("downloads"):
        OFF.mark("message")
    OFF.start(ThreadPoolExecutor(1), threading.Event())
    assert threading.active_count() == before
    assert not OFF.enabled and list(tmp_path.iterdir()) == []


def test_samples_count_the_threads_inside_each_span(tmp_path) -> None:
    timeline = Timeline(tmp_path / "tl")
    pool = ThreadPoolExecutor(4)
    inside, release = threading.Barrier(4), threading.Event()

    def work() -> None:
        with timeline.span("attempts"), timeline.span("downloads"):
            inside.wait(5)
            release.wait(5)

    futures = [pool.submit(work) for _ in range(3)]
    inside.wait(5)
    timeline.mark("message")
    timeline.mark("message")
    row = timeline.sample(pool)
    release.set()
    for f in futures:
        f.result(5)
    assert row["downloads"] == 3 and row["attempts"] == 3 and row["slot_wait"] == 0
    assert row["pool_threads"] == 3 and row["pool_queued"] == 0
    first, last = row["marks"]["message"]
    assert first <= last
    assert timeline.sample(pool)["downloads"] == 0  # every span left


def test_the_sampler_writes_one_json_line_per_sample_until_stopped(tmp_path) -> None:
    timeline = Timeline(tmp_path / "tl")
    stop = threading.Event()
    pool = ThreadPoolExecutor(1)
    timeline.start(pool, stop)
    path = tmp_path / "tl"
    deadline = threading.Event()
    for _ in range(100):  # up to 5 s for three samples
        files = list(path.glob("worker-*.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 3:
            break
        deadline.wait(0.05)
    stop.set()
    rows = [json.loads(line) for line in files[0].read_text().splitlines() if line]
    assert len(rows) >= 3 and {"t", "cpu_s", "messages", "downloads"} <= rows[0].keys()
