"""Reconcile (contract §15) of a large collection: documents/s and peak RSS, dry run and real.

Starts a private nx-27017 (temporary directory), fills a collection of N documents (ObjectId
``_id``s, a name and 3 image URLs each) and a tree with a folder for 90% of them (a
metadata.json naming 3 images, 3 small image files), then puts the tree out of step as a
listener that was down would leave it: 1% of the folders' documents deleted (to trash), 1%
of the documents' URL lists changed (to download), the 10% without folder never downloaded
(to download), one unnamed file older than an hour in 1% of the folders (to remove).

Each reconcile (dry run, then real) runs in a fresh child process, which times the job's
step (workers/pipeline/reconcile.py; the downloads it enqueues are not run: no worker) and
reports its peak RSS (``ru_maxrss``) and its RSS before the step (after imports and
connections), its CPU time and that of the servers (nx-27017, weed): on a shared machine
the wall time depends on the others' load, the CPU seconds much less. Redis: DB 13
(``--redis-db``), emptied before and after; the broker's messages land there too.

    .venv/bin/python bench/reconcile_bench.py --sizes 20000,100000 --s3-documents 5000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import redis  # noqa: E402
from bson import ObjectId  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from images_service.config.settings import load_settings  # noqa: E402
from images_service.dev.embedded import start_embedded_mongo  # noqa: E402
from images_service.storage.factory import create_storage  # noqa: E402

DATABASE, COLLECTION = "bench", "hotels"
INSERT_BATCH = 5000
OLD_S = 2 * 3600  # the age given to the unnamed files


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _urls(n: int, changed: bool = False) -> list[str]:
    urls = [f"https://cdn.example.com/{n}/{i}.jpg" for i in range(3)]
    return [*urls, f"https://cdn.example.com/{n}/new.jpg"] if changed else urls


def fill(settings, count: int, folder_ratio: float) -> dict[str, int]:
    """The collection and its tree, out of step as described in the module docstring."""
    coll = MongoClient(settings.mongodb_uri)[DATABASE][COLLECTION]
    coll.drop()
    storage = create_storage(settings)
    expected = {"trashed": 0, "downloaded": 0, "removed_files": 0}
    with_folder = int(count * folder_ratio)
    docs = []
    old_s = time.time() - OLD_S
    for n in range(count):
        doc_id = ObjectId()
        name = f"Hotel {n}"
        folder = f"{DATABASE}/{COLLECTION}/{doc_id}-hotel-{n}"
        deleted = n < with_folder and n % 100 == 1
        changed = n % 100 == 2
        if n < with_folder:
            _write_folder(settings, storage, folder, doc_id, name, _urls(n), stray=n % 100 == 3,
                          old_s=old_s)
            expected["removed_files"] += n % 100 == 3
        if deleted:
            expected["trashed"] += 1
        else:
            docs.append({"_id": doc_id, "name": name, "images": _urls(n, changed),
                         "description": "x" * 300})
            expected["downloaded"] += n >= with_folder or changed
        if len(docs) >= INSERT_BATCH:
            coll.insert_many(docs)
            docs = []
    if docs:
        coll.insert_many(docs)
    storage.close()
    return expected


def _write_folder(settings, storage, folder: str, doc_id, name: str, urls: list[str], *,
                  stray: bool, old_s: float) -> None:
    images = [{"index": i, "url": url, "status": "downloaded", "file": f"original/img_{i:03d}.jpg",
               "sha256": "0" * 64, "bytes": 4, "format": "JPEG", "width": 1, "height": 1}
              for i, url in enumerate(urls, start=1)]
    meta = {"schema_version": 1, "database": DATABASE, "collection": COLLECTION,
            "document_id": str(doc_id), "document_key": {"$oid": str(doc_id)},
            "search_field": "name", "search_value": name, "job_id": "bench",
            "updated_at": "2026-12-01T00:00:00Z", "images": images,
            "summary": {"total": len(urls), "downloaded": len(urls), "failed": 0, "skipped": 0}}
    files = {f"{folder}/original/img_{i:03d}.jpg": b"jpeg" for i in range(1, len(urls) + 1)}
    if stray:
        files[f"{folder}/original/img_009.jpg"] = b"stray"
    if storage.name == "filesystem":
        root = Path(settings.storage_path)
        (root / folder / "original").mkdir(parents=True, exist_ok=True)
        (root / folder / "processed").mkdir(exist_ok=True)
        for key, data in files.items():
            (root / key).write_bytes(data)
        (root / folder / "metadata.json").write_text(json.dumps(meta))
        if stray:
            os.utime(root / folder / "original/img_009.jpg", (old_s, old_s))
    else:
        for key, data in files.items():
            storage.put_bytes(key, data, content_type="image/jpeg")
        storage.put_bytes(f"{folder}/metadata.json", json.dumps(meta).encode())


def child(env: dict[str, str], dry_run: bool, ahead_s: float) -> None:
    """One reconcile job's step in this process; prints one JSON line."""
    from images_service.backends import mongo_client
    from images_service.jobs.store import JobStore
    from images_service.jobs.triggers import Triggers
    from images_service.queueing.broker import build_broker
    from images_service.queueing.messages import Enqueuer
    from workers.pipeline import DownloadPipeline

    settings = load_settings(env)
    red = redis.Redis.from_url(settings.redis_url)
    mongo = mongo_client(settings)
    enqueuer = Enqueuer(build_broker(settings, client=red))
    pipeline = DownloadPipeline(settings, mongo=mongo, redis_client=red, enqueuer=enqueuer)
    jobs = JobStore(mongo, settings.jobs_database)
    job = Triggers(settings, mongo, red, jobs, enqueuer).reconcile_job(DATABASE, COLLECTION,
                                                                       dry_run=dry_run)
    pipeline.reconciler.clock = lambda: time.time() + ahead_s
    rss_before = _rss_mb()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if os.environ.get("RECONCILE_BENCH_PROFILE"):  # where the time goes, on stderr
        import cProfile
        import pstats

        from workers.pipeline import reconcile

        # One thread, so that the profile sees the reading too (no read-ahead).
        reconcile.read_ahead = lambda items, depth=2: items  # type: ignore[assignment]
        profile = cProfile.Profile()
        profile.runcall(pipeline.scan, job["_id"])
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(40)
    else:
        pipeline.scan(job["_id"])
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    done = jobs.get(job["_id"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipeline.close()
    print(json.dumps({"elapsed_s": elapsed, "cpu_s": cpu_s, "rss_before_mb": rss_before,
                      "peak_rss_mb": peak,
                      "result": {k: v for k, v in (done.get("result") or {}).items()
                                 if k != "examples"}}))


def run_child(env: dict[str, str], dry_run: bool, servers: list) -> dict:
    """One reconcile in a child; adds the CPU seconds the servers (MongoDB, weed) spent."""
    cpu = [psutil.Process(p.process.pid) for p in servers]
    before = [sum(c.cpu_times()[:2]) for c in cpu]
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(env),
                          "--dry-run" if dry_run else "--real"],
                         stdout=subprocess.PIPE, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["server_cpu_s"] = sum(sum(c.cpu_times()[:2]) - b for c, b in zip(cpu, before,
                                                                         strict=True))
    return row


def bench(env: dict[str, str], label: str, count: int, folder_ratio: float,
          servers: list) -> list[str]:
    settings = load_settings(env)
    redis.Redis.from_url(settings.redis_url).flushdb()
    started = time.perf_counter()
    expected = fill(settings, count, folder_ratio)
    print(f"[{label}] filled {count} documents, {int(count * folder_ratio)} folders in "
          f"{time.perf_counter() - started:.1f} s; expected {expected}", flush=True)
    rows = []
    for dry_run in (True, False):
        row = run_child(env, dry_run, servers)
        ok = "ok" if row["result"] == expected else f"EXPECTED {expected}"
        line = (f"[{label}] {count:>7} documents, {'dry run' if dry_run else 'real   '}: "
                f"{row['elapsed_s']:6.1f} s = {count / row['elapsed_s']:7.0f} documents/s "
                f"(CPU: reconcile {row['cpu_s']:.1f} s, servers {row['server_cpu_s']:.1f} s; "
                f"{count / (row['cpu_s'] + row['server_cpu_s']):.0f} documents per CPU s); "
                f"RSS {row['rss_before_mb']:.0f} MB before, peak {row['peak_rss_mb']:.0f} MB; "
                f"result {row['result']} ({ok})")
        print(line, flush=True)
        rows.append(line)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,100000",
                        help="collection sizes on the filesystem (comma-separated)")
    parser.add_argument("--folder-ratio", type=float, default=0.9)
    parser.add_argument("--s3-documents", type=int, default=5000, help="0: no S3 run")
    # DB 13: this bench's own (outside the test runs' DBs); emptied before and after.
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child), args.dry_run, OLD_S)
        return 0

    data = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    mongo = start_embedded_mongo(data / "mongo")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    base = {"MONGODB_URI": f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
            "REDIS_URL": redis_url, "API_KEY": "bench-key-0123456789",
            "JOBS_DATABASE": "bench_jobs", "LOG_LEVEL": "WARNING",
            "STORAGE_PATH": str(data / "images")}
    s3 = None
    rows: list[str] = []
    try:
        for count in [int(s) for s in args.sizes.split(",") if s]:
            shutil.rmtree(data / "images", ignore_errors=True)
            rows += bench(base, "filesystem", count, args.folder_ratio, [mongo])
        if args.s3_documents:
            from images_service.dev.embedded_s3 import EmbeddedS3

            keys = ("bench", "bench-secret")
            s3 = EmbeddedS3(data / "s3", keys=keys).start()
            s3.create_bucket("reconcile-bench")
            os.environ.update({"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]})
            env = {**base, "STORAGE_BACKEND": "s3", "S3_BUCKET": "reconcile-bench",
                   "S3_ENDPOINT_URL": s3.endpoint_url, "STORAGE_PATH": str(data / "s3-local")}
            rows += bench(env, "s3 (SeaweedFS)", args.s3_documents, args.folder_ratio,
                          [mongo, s3.process])
    finally:
        if s3 is not None:
            s3.close()
        mongo.stop()
        redis.Redis.from_url(redis_url).flushdb()
        shutil.rmtree(data, ignore_errors=True)
    print("\n".join(["", "summary:", *rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
