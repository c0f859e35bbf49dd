"""Freshness benchmark (contract §16): a 304 re-check against a download, and fetched-once.

Uses the shared loopback corpus (2000 images on 127.0.0.2–21) served by a *private* nginx of
the shared ``server.sh`` with its access log on (another port and prefix, so it never
disturbs a benchmark running on the default server): every request's status and body bytes
are read from that log, the independent truth of what went over the wire. nginx sends
``ETag`` and ``Last-Modified`` for static files and answers a conditional request with
``304``.

In one run, with one worker (``--processes`` × ``--threads``):

1. **download**: a collection job over ``--per-doc`` URLs per document (timed);
2. **refresh**: a refresh job of the same collection, every image re-checked (timed; every
   image answers 304);
3. **re-download**: the same collection with ``"force": true`` (timed), for comparison;
4. **fetched once** (``--dup N``, default 5): a fresh collection where each URL appears in N
   documents; its download job must send one request per distinct URL.

Printed per phase: images/s, requests, requests by status, body bytes, worker CPU. Goals
(issue "Freshness"): a 304 re-check ≥ 3× the images/s of a download with 0 body bytes; the
duplicated collection's requests = distinct URLs.

    .venv/bin/python bench/freshness_bench.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import redis
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from api import create_app  # noqa: E402
from images_service.config.settings import load_settings  # noqa: E402
from images_service.dev.embedded import free_port, start_embedded_mongo  # noqa: E402
from service_bench import KEY, SHARED, cpu_of, tree  # noqa: E402

PREFIX = "/tmp/bench-freshness-nginx"
#: nginx's default ("combined") access log line: … "GET /good/x.jpg HTTP/1.1" 304 0 …
LOG_LINE = re.compile(r'"(?:GET|HEAD) (\S+) HTTP/[\d.]+" (\d{3}) (\d+)')


def server(action: str, port: int) -> None:
    env = {**os.environ, "BENCH_NGINX_PREFIX": PREFIX, "BENCH_PORT": str(port),
           "BENCH_FLAKY_PORT": str(port + 1), "BENCH_ACCESS_LOG": "1"}
    subprocess.run(["bash", str(SHARED / "server.sh"), action], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def log_offset() -> int:
    log = Path(PREFIX) / "logs" / "access.log"
    return log.stat().st_size if log.exists() else 0


def traffic_since(offset: int) -> dict:
    """Requests, statuses and body bytes nginx logged since ``offset``."""
    with open(Path(PREFIX) / "logs" / "access.log", "rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    statuses: Counter[str] = Counter()
    body = 0
    for line in lines:
        match = LOG_LINE.search(line)
        if match:
            statuses[match.group(2)] += 1
            body += int(match.group(3))
    return {"requests": sum(statuses.values()), "statuses": dict(statuses), "body_bytes": body}


def run_job(client, path: str, body: dict, worker: psutil.Process) -> dict:
    offset = log_offset()
    cpu0 = cpu_of(tree(worker))
    started = time.monotonic()
    job_id = client.post(path, json=body, headers={"X-API-Key": KEY}).json["job_id"]
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": KEY}).json
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    seconds = time.monotonic() - started
    time.sleep(0.5)  # nginx writes its log line after the response
    return {"job": job, "seconds": seconds, "cpu_worker": cpu_of(tree(worker)) - cpu0,
            **traffic_since(offset)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", default="/tmp/bench-urls/good.txt")
    parser.add_argument("--port", type=int, default=18090, help="the private nginx's port")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-doc", type=int, default=5)
    parser.add_argument("--dup", type=int, default=5)
    # DB 15: outside the test runs' DBs (TEST_REDIS_DB, default 8-14), which they empty.
    parser.add_argument("--redis-db", type=int, default=15)
    args = parser.parse_args()

    urls = [re.sub(r":18080/", f":{args.port}/", u.strip())
            for u in Path(args.urls).read_text().splitlines() if u.strip()]
    data = Path(tempfile.mkdtemp(prefix="freshness-bench-"))
    server("start", args.port)
    mongo = start_embedded_mongo(data / "mongo")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    mongo_uri = f"mongodb://127.0.0.1:{mongo.port}"
    env = {
        "MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "STORAGE_PATH": str(data / "images"),
        "API_KEY": KEY, "ALLOW_PRIVATE_NETWORKS": "false",
        "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27", "MAX_CONCURRENT_PER_DOMAIN": "8",
        "MAX_CONCURRENT_DOWNLOADS": "64", "API_RATE_LIMIT": "100000/minute",
        "JOBS_DATABASE": "bench_jobs", "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "WORKER_METRICS_PORT": str(free_port()),
    }
    settings = load_settings(env)
    db = MongoClient(mongo_uri).bench_src
    per = args.per_doc
    db.hotels.insert_many([{"name": f"Doc {i}", "images": urls[i:i + per]}
                           for i in range(0, len(urls), per)])
    # Each URL in --dup documents: --dup copies of every document, under other names.
    db.shared.insert_many([{"name": f"Doc {i} copy {k}", "images": urls[i:i + per]}
                           for i in range(0, len(urls), per) for k in range(args.dup)])
    worker_env = {**os.environ, **env,
                  "PYTHONPATH": f"{SHARED / 'guard'}{os.pathsep}{REPO}",
                  "BENCH_GUARD_LOG": str(data / "guard.log")}
    log = open(data / "worker.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "images_service.cli", "worker", "--processes",
         str(args.processes), "--threads", str(args.threads)],
        env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rows = []
    try:
        time.sleep(4)
        worker = psutil.Process(proc.pid)
        client = create_app(settings).test_client()
        phases = [
            ("download", "/api/v1/download/collection/bench_src/hotels", {}),
            ("refresh (304)", "/api/v1/refresh/bench_src/hotels", {}),
            ("re-download (force)", "/api/v1/download/collection/bench_src/hotels",
             {"force": True}),
            (f"fetched once (each URL in {args.dup} documents)",
             "/api/v1/download/collection/bench_src/shared", {}),
        ]
        for name, path, body in phases:
            if name.startswith("fetched once"):
                # A fresh start for this one: nothing indexed yet, so every URL is new and
                # its five documents race for it (claims), as in a first bulk download.
                MongoClient(mongo_uri).bench_jobs.urls.drop()
                red = redis.Redis.from_url(redis_url)
                for key in red.scan_iter("isv:fetch:*"):
                    red.delete(key)
            row = run_job(client, path, body, worker)
            p = row["job"]["progress"]
            images = (p["images_downloaded"] + p.get("images_not_modified", 0)
                      + p.get("images_changed", 0))
            rows.append((name, images, row))
            print(f"{name}: {row['job']['status']}, {images} images in {row['seconds']:.2f} s "
                  f"= {images / row['seconds']:.1f} images/s; requests {row['requests']} "
                  f"{row['statuses']}; body bytes {row['body_bytes']:,}; worker CPU "
                  f"{row['cpu_worker']:.2f} s ({1000 * row['cpu_worker'] / max(images, 1):.2f} "
                  f"ms/image)", flush=True)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)
        mongo.stop()
        server("stop", args.port)
        redis.Redis.from_url(redis_url).flushdb()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    download, refresh, again = rows[0][2], rows[1][2], rows[2][2]
    speed = {name: images / row["seconds"] for name, images, row in rows}
    print()
    print(f"refresh / download: {speed['refresh (304)'] / speed['download']:.2f}x "
          f"(goal >= 3x); refresh / forced re-download: "
          f"{speed['refresh (304)'] / speed['re-download (force)']:.2f}x; refresh body bytes "
          f"{refresh['body_bytes']} (goal 0; download {download['body_bytes']:,}, re-download "
          f"{again['body_bytes']:,})")
    dup = rows[3][2]
    print(f"fetched once: {dup['requests']} requests for {len(set(urls))} distinct URLs in "
          f"{len(urls) * args.dup} images (goal: requests = distinct URLs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
