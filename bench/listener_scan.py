"""The listener's catch-up scan: one pass over a collection of downloaded documents.

Starts a private nx-27017 (in a temporary directory), fills collections of N documents (3
image URLs and a 300-character description each, like the scan's first measurement) in the
states below, and times one pass of workers/listener/scan.py over each: wall time, and the
listener process's own CPU (the server's is not counted). Submitting is stubbed (counted);
the jobs collection is real, so the scan's de-duplication query and the update rule's
request-fields lookup cost what they cost.

States (``--states``):

- ``written``: every document downloaded, the write-back recording ``urls_sha256`` and
  ``path`` (a write-back of today), nothing changed since;
- ``old``: every document downloaded with a write-back older than ``urls_sha256``;
- ``changed``: as ``written``, with 1% of the documents' URL lists changed since.

Each state is scanned with ``WATCH_UPDATES=false`` (the scan as it was before updates were
followed: flagged and never-downloaded documents only) and ``true``.

    .venv/bin/python bench/listener_scan.py --documents 100000 --runs 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bson import ObjectId  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from images_service.config.settings import load_settings  # noqa: E402
from images_service.dev.embedded import start_embedded_mongo  # noqa: E402
from images_service.download.urls import url_list_sha256  # noqa: E402
from images_service.jobs.store import JobStore  # noqa: E402
from workers.listener.scan import CatchUpScan  # noqa: E402
from workers.listener.tree import Decider  # noqa: E402

DATABASE = "bench"
BATCH = 5000


class CountingSubmitter:
    """Stands in for the job submitter: counts what the scan would submit."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, database, collection, source_id, decision, redecide=None) -> str:
        self.submitted += 1
        return "enqueued"

    def settled(self, job_ids: list[str]) -> set[str]:
        return set()


def fill(coll, count: int, state: str) -> None:
    coll.drop()
    description = "x" * 300
    for start in range(0, count, BATCH):
        docs = []
        for n in range(start, min(count, start + BATCH)):
            doc_id = ObjectId()
            urls = [f"https://cdn.example.com/{n}/{i}.jpg" for i in range(3)]
            status = {"status": "completed", "job_id": f"job-{n}", "downloaded": 3,
                      "failed": 0, "path": f"{DATABASE}/{coll.name}/{doc_id}-hotel-{n}"}
            if state != "old":
                status["urls_sha256"] = url_list_sha256(urls)
            if state == "changed" and n % 100 == 0:
                urls = [*urls, f"https://cdn.example.com/{n}/new.jpg"]
            docs.append({"_id": doc_id, "name": f"Hotel {n}", "description": description,
                         "images": urls, "download_images": False, "images_download": status})
        coll.insert_many(docs, ordered=False)


def one_pass(client, settings, collection: str) -> tuple[float, float, int, int]:
    scan = CatchUpScan()
    scan.add({(DATABASE, collection)}, "bench")
    submitter = CountingSubmitter()
    decider = Decider(settings, None, JobStore(client, settings.jobs_database))
    wall, cpu = time.perf_counter(), time.process_time()
    while scan.active:
        scan.step(client, settings, submitter, decider)
    return (time.perf_counter() - wall, time.process_time() - cpu, scan.documents,
            submitter.submitted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--states", default="written,old,changed")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the scan's "queued" / "finished" lines
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
        mongo = start_embedded_mongo(Path(tmp) / "nx")
        try:
            uri = f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true"
            client = MongoClient(uri)
            base = load_settings({"MONGODB_URI": uri, "JOBS_DATABASE": "bench_jobs"})
            print(f"{args.documents} documents per collection, {args.runs} passes each; "
                  "seconds per pass (median), listener CPU s, candidates, submitted")
            for state in args.states.split(","):
                filled = time.perf_counter()
                fill(client[DATABASE][state], args.documents, state)
                print(f"[{state}] filled in {time.perf_counter() - filled:.1f} s")
                for watch_updates in (False, True):
                    settings = replace(base, watch_updates=watch_updates)
                    runs = [one_pass(client, settings, state) for _ in range(args.runs)]
                    walls = [r[0] for r in runs]
                    print(f"  {state:8} WATCH_UPDATES={str(watch_updates).lower():5} "
                          f"wall {statistics.median(walls):6.2f} s "
                          f"(runs {', '.join(f'{w:.2f}' for w in walls)}), "
                          f"CPU {statistics.median(r[1] for r in runs):6.2f} s, "
                          f"{runs[0][2]} candidates, {runs[0][3]} submitted")
        finally:
            mongo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
