"""Politeness benchmark (contract §17): the bulk corpus with 2 of its 20 hosts answering 429.

The shared loopback corpus (2000 images on 20 nginx hosts, 127.0.0.2–21:18080, see
bench/README.md) is downloaded by a real ``images-service worker`` through a REST collection job,
as in service_bench.py. With ``--slow-hosts 2`` (the default) the URLs of the first two hosts
are served instead by this script's own server on 127.0.0.22 and .23 (same files, same paths),
which answers ``429`` with ``Retry-After: 2`` to 30 % of requests (seeded) and logs every
request with its arrival time and status. Each configuration is run with and without the 429s
(``--configs``), interleaved.

Measured per run: total time (POST → job completed), images downloaded/failed, retries spent
(sum of ``attempts - 1`` over the metadata records, and the worker's
``images_downloads_total{result="retried"}``), downloads delayed by a pause
(``images_downloads_total{result="deferred"}``: no retry spent), pauses started
(``images_host_pauses_total``), the worker's own invariant counter
``images_requests_to_paused_hosts_total``, and from the slow servers' log the requests that
arrived while their host was paused — within a pause as Redis recorded it (its ``from`` and
``until``, polled every 5 ms), more than 0.25 s after it began (a request granted just before
may still be on its way): must be 0.

It starts its own nx-27017 and Redis server. With ``--monitor`` Redis MONITOR records the
run's commands: the calls of the slot scripts (acquire: slot, host state, the previous
request's success; release: a failure or 429 at once, or a release no acquire carried;
renew) per downloaded image — the round trips the host state costs. MONITOR slows Redis:
its runs are not timed comparisons.

    # the loopback corpus and its nginx hosts running (bench/README.md)
    .venv/bin/python bench/politeness_bench.py --runs 3
    .venv/bin/python bench/politeness_bench.py --runs 1 --monitor
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import redis
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api import create_app  # noqa: E402
from images_service.config.settings import load_settings  # noqa: E402
from images_service.dev.embedded import free_port, start_embedded_mongo, start_redis  # noqa: E402,E501
from images_service.download import caps  # noqa: E402

CORPUS = Path("/tmp/bench-corpus")
KEY = "bench-key-0123456789"
SLOW_ADDRESSES = ("127.0.0.22", "127.0.0.23")
GRACE_S = 0.25  # a request granted just before a pause was recorded may arrive this late


class SlowHosts:
    """The corpus files on extra loopback hosts; a share of requests answered 429."""

    def __init__(self, addresses: tuple[str, ...], share: float, retry_after_s: int,
                 seed: int) -> None:
        self.share, self.retry_after_s = share, retry_after_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.log: list[tuple[str, float, int]] = []  # host, arrival, status
        self.servers = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                arrived = time.time()
                host = self.server.server_address[0]
                with owner.lock:
                    refuse = owner.rng.random() < owner.share
                path = CORPUS / urlsplit(self.path).path.lstrip("/")
                if refuse:
                    body, status = b"slow down", 429
                    headers = {"Retry-After": str(owner.retry_after_s),
                               "Content-Type": "text/plain"}
                elif path.is_file() and CORPUS in path.resolve().parents:
                    body, status = path.read_bytes(), 200
                    headers = {"Content-Type": "application/octet-stream"}
                else:
                    body, status, headers = b"not found", 404, {"Content-Type": "text/plain"}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with owner.lock:
                    owner.log.append((host, arrived, status))

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.port = free_port()
        for address in addresses:
            server = Server((address, self.port), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

    def reset(self, share: float) -> None:
        with self.lock:
            self.log.clear()
            self.share = share

    def during_pauses(self, windows: dict[str, set[tuple[int, int]]]) -> list[float]:
        """Requests that arrived at a host during one of its pauses as Redis recorded them
        (``windows``: host -> (from, until) in ms), later than GRACE_S after the pause began
        (earlier ones may have been granted just before it: in flight); for each, seconds
        since its pause began."""
        with self.lock:
            log = list(self.log)
        found = []
        for host, t, _status in log:
            late = [t - since / 1000 for since, until in windows.get(host, ())
                    if since / 1000 + GRACE_S < t < until / 1000]
            if late:
                found.append(round(min(late), 3))
        return found

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


class PauseWatcher(threading.Thread):
    """Polls the slow hosts' state in Redis every 5 ms: every pause's (from, until)."""

    def __init__(self, url: str, hosts: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.hosts = hosts
        self.windows: dict[str, set[tuple[int, int]]] = {h: set() for h in hosts}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.005):
            for host in self.hosts:
                since, until = self.client.hmget(f"isv:caps:hs:{host}", "from", "until")
                if since and until and float(until) > float(since):
                    self.windows[host].add((int(float(since)), int(float(until))))

    def stop(self) -> dict[str, set[tuple[int, int]]]:
        self.halt.set()
        self.join()
        # a pause extended while it lasted was seen with several ends: keep the longest
        return {h: {(s, max(u for s2, u in w if s2 == s)) for s, _u in w}
                for h, w in self.windows.items()}



def scrape(port: int) -> dict[str, float]:
    """The worker's images_* samples, summed over label sets of interest."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    wanted = {}
    for line in text.splitlines():
        m = re.match(r'^(images_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$', line)
        if m:
            wanted[m.group(1) + (m.group(2) or "")] = wanted.get(
                m.group(1) + (m.group(2) or ""), 0.0) + float(m.group(3))
    return wanted


def script_shas() -> dict[str, str]:
    return {hashlib.sha1(text.encode()).hexdigest(): name for name, text in
            (("acquire", caps._ACQUIRE), ("release", caps._RELEASE), ("renew", caps._RENEW))}


class Monitor(threading.Thread):
    """Counts the slot scripts' calls (and all commands) through Redis MONITOR."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.shas = script_shas()
        self.calls = {name: 0 for name in self.shas.values()}
        self.commands = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with self.client.monitor() as monitor:
            for event in monitor.listen():
                if self.halt.is_set():
                    return
                self.commands += 1
                command = event.get("command", "")
                if command.upper().startswith("EVALSHA "):
                    name = self.shas.get(command.split()[1].lower())
                    if name:
                        self.calls[name] += 1

    def stop(self) -> None:
        self.halt.set()
        self.client.ping()  # one more event wakes the listener


def run(args, urls: list[str], share: float, slow: SlowHosts | None, mongo, monitor: bool
        ) -> dict:
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    redis_url = args.redis_url
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    if slow is not None:
        slow.reset(share)
    metrics_port = free_port()
    env = {
        "MONGODB_URI": f"mongodb://127.0.0.1:{mongo.port}", "REDIS_URL": redis_url,
        "STORAGE_PATH": str(out), "API_KEY": KEY, "ALLOW_PRIVATE_NETWORKS": "false",
        "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
        "MAX_CONCURRENT_PER_DOMAIN": str(args.per_domain),
        "MAX_CONCURRENT_DOWNLOADS": str(args.fleet), "API_RATE_LIMIT": "100000/minute",
        "JOBS_DATABASE": "bench_jobs", "LOG_LEVEL": "WARNING", "STORAGE_BACKEND": "filesystem",
        "WORKER_METRICS_PORT": str(metrics_port), "IMAGE_VALIDATION": args.validation,
    }
    settings = load_settings(env)
    db = MongoClient(env["MONGODB_URI"])
    db.drop_database("bench_src")
    db.drop_database("bench_jobs")
    db.bench_src.hotels.insert_many([{"name": f"Bench doc {i}", "images": urls[i:i + 5]}
                                     for i in range(0, len(urls), 5)])
    worker_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    with open(Path(args.data) / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "images_service.cli", "worker", "--processes",
             str(args.processes), "--threads", str(args.threads)],
            env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(args.warmup)
        spy = Monitor(redis_url) if monitor else None
        if spy:
            spy.start()
            time.sleep(0.2)
        watcher = PauseWatcher(redis_url, SLOW_ADDRESSES[:args.slow_hosts])
        watcher.start()
        client = create_app(settings).test_client()
        started = time.monotonic()
        job_id = client.post("/api/v1/download/collection/bench_src/hotels",
                             headers={"X-API-Key": KEY}).json["job_id"]
        while True:
            job = client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": KEY}).json
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        seconds = time.monotonic() - started
        windows = watcher.stop()
        time.sleep(6)  # the queue sampler's next pass; deferred releases flushed
        if spy:
            spy.stop()
        samples = scrape(metrics_port)
    finally:  # never leave a worker behind (it would take the next run's messages)
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    records = [rec for meta in out.rglob("metadata.json")
               for rec in json.loads(meta.read_text())["images"]]
    shutil.rmtree(out, ignore_errors=True)

    def metric(name: str, **labels: str) -> float:
        key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                      if labels else "")
        return samples.get(key, 0.0)

    ok = job["progress"]["images_downloaded"]
    row = {
        "share_429": share, "seconds": round(seconds, 2), "status": job["status"],
        "downloaded": ok, "failed": job["progress"]["images_failed"],
        "retries_spent": sum(rec.get("attempts", 1) - 1 for rec in records),
        "retried_metric": metric("images_downloads_total", result="retried"),
        "deferred": metric("images_downloads_total", result="deferred"),
        "pauses_retry_after": metric("images_host_pauses_total", reason="retry_after"),
        "pauses_breaker": metric("images_host_pauses_total", reason="breaker"),
        "requests_to_paused_hosts_metric": metric("images_requests_to_paused_hosts_total"),
        "requests_during_pause_server_log": len(during := slow.during_pauses(windows)
                                                if slow else []),
        "during_pause_offsets_s": during,
        "slow_host_requests": len(slow.log) if slow else 0,
        "slow_host_429s": sum(1 for e in (slow.log if slow else []) if e[2] == 429),
    }
    if spy:
        row.update({f"calls_{k}": v for k, v in spy.calls.items()})
        row["script_calls_per_image"] = round(sum(spy.calls.values()) / max(ok, 1), 3)
        row["acquire_calls_per_image"] = round(spy.calls["acquire"] / max(ok, 1), 3)
        row["redis_commands_per_image"] = round(spy.commands / max(ok, 1), 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", default="/tmp/bench-urls/good.txt")
    parser.add_argument("--out", default="/tmp/bench-out-politeness")
    parser.add_argument("--slow-hosts", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.30)
    parser.add_argument("--retry-after", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-domain", type=int, default=8)
    parser.add_argument("--fleet", type=int, default=64)
    parser.add_argument("--validation", default="full")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--monitor", action="store_true", help="count Redis round trips")
    parser.add_argument("--only-429", action="store_true", help="skip the run without 429s")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--json", default="/tmp/politeness-bench-results.jsonl")
    args = parser.parse_args()

    urls = [u.strip() for u in Path(args.urls).read_text().splitlines() if u.strip()]
    hosts = sorted({urlsplit(u).hostname for u in urls},
                   key=lambda h: tuple(map(int, h.split("."))))
    slow = SlowHosts(SLOW_ADDRESSES[:args.slow_hosts], args.share, args.retry_after,
                     args.seed) if args.slow_hosts else None
    if slow:
        moved = dict(zip(hosts[:args.slow_hosts], SLOW_ADDRESSES, strict=False))
        urls = [u.replace(f"//{h}:{urlsplit(u).port}", f"//{moved[h]}:{slow.port}")
                if (h := urlsplit(u).hostname) in moved else u for u in urls]
    args.data = tempfile.mkdtemp(prefix="politeness-bench-")
    mongo = start_embedded_mongo(Path(args.data) / "mongo")
    # A private Redis: the machine's is shared with test runs that flush their DBs, and
    # MONITOR then sees only this run.
    own_redis = start_redis(Path(args.data) / "redis")
    args.redis_url = f"redis://127.0.0.1:{own_redis.port}/0"
    configs = [("with 429s", args.share)] + ([] if args.only_429 else [("without 429s", 0.0)])
    rows: dict[str, list[dict]] = {name: [] for name, _ in configs}
    try:
        with open(args.json, "a") as jsonl:
            for n in range(args.runs):
                order = configs[n % len(configs):] + configs[:n % len(configs)]
                for name, share in order:
                    row = run(args, urls, share, slow, mongo, args.monitor)
                    row.update({"config": name, "run": n + 1, "monitor": args.monitor})
                    rows[name].append(row)
                    jsonl.write(json.dumps(row) + "\n")
                    print(f"run {n + 1} {name}: {json.dumps(row)}", flush=True)
    finally:
        mongo.stop()
        own_redis.stop()
        if slow:
            slow.close()
        shutil.rmtree(args.data, ignore_errors=True)
    print()
    print("| config | total s (median) | runs | downloaded / failed | retries spent "
          "| deferred (no retry) | pauses | requests to paused hosts (metric / server log) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _share in configs:
        rs = rows[name]
        print(f"| {name} | {statistics.median(r['seconds'] for r in rs):.1f} | "
              f"{', '.join(str(r['seconds']) for r in rs)} | "
              f"{min(r['downloaded'] for r in rs)} / {max(r['failed'] for r in rs)} | "
              f"{', '.join(str(r['retries_spent']) for r in rs)} | "
              f"{', '.join(str(int(r['deferred'])) for r in rs)} | "
              f"{', '.join(str(int(r['pauses_retry_after'] + r['pauses_breaker'])) for r in rs)} | "
              f"{max(r['requests_to_paused_hosts_metric'] for r in rs):.0f} / "
              f"{max(r['requests_during_pause_server_log'] for r in rs)} |")
    if args.monitor:
        for name, _share in configs:
            r = rows[name][0]
            print(f"{name}: slot-script calls per image {r['script_calls_per_image']} "
                  f"(acquire {r['calls_acquire']}, release {r['calls_release']}, renew "
                  f"{r['calls_renew']}; acquires per image {r['acquire_calls_per_image']}); "
                  f"all Redis commands per image {r['redis_commands_per_image']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
