"""Listener latency: time from a document's insert to its metadata.json, at steady rates.

Starts private backing servers (nx-27017 and Redis, in a temporary directory), a real
`images-service worker` and `images-service listener`, then inserts documents with 3 image
URLs each at a steady rate per step, and measures insert → metadata.json written (its
mtime; the file appears atomically and is written once when the 3 images are recorded).
Prints p50/p95/p99 per rate and the highest rate whose p99 stays under 2 s. Every image URL
is distinct (a query parameter), so each one is downloaded, never copied from the URL index.

Images come from the shared bench nginx (../shared/bench: hosts 127.0.0.2-21:18080, URLs in
/tmp/bench-urls/good.txt; start it with `bash ../shared/bench/server.sh start`), or with
``--images loopback`` from the test suite's loopback image server (generated 64x48 images).

    .venv/bin/python bench/listener_latency.py --rates 10,20,30,40 --seconds 15
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from images_service.dev.embedded import free_port, start_embedded_mongo, start_redis  # noqa: E402

GOOD_URLS = Path("/tmp/bench-urls/good.txt")
DATABASE = "bench"
#: The contract's goal: p50 under this at 20 documents/s; "sustained" means p99 under 2 s.
P99_LIMIT_S = 2.0


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # BENCH_PYTHONPATH_PREFIX: e.g. an older checkout first, to measure it with this bench.
    path = os.environ.get("BENCH_PYTHONPATH_PREFIX", "") + str(REPO)
    return subprocess.Popen(args, env={**os.environ, **env, "PYTHONPATH": path},
                            cwd=log.parent, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)


def wait_log(path: Path, needle: str, count: int, proc: subprocess.Popen, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(needle) >= count:
            return
        if proc.poll() is not None:
            raise SystemExit(f"{path.name}: exited early:\n{path.read_text()[-3000:]}")
        time.sleep(0.05)
    raise SystemExit(f"{path.name}: no {needle!r} in {timeout_s} s")


def image_urls(source: str) -> tuple[list[str], object | None]:
    if source == "nginx":
        urls = GOOD_URLS.read_text().split()
        host, port = urls[0].split("/")[2].split(":")
        with socket.create_connection((host, int(port)), timeout=2):
            pass  # fails loudly when the bench nginx is not running
        return urls, None
    from tests.support.image_server import ImageServer

    server = ImageServer().start()
    return [server.url(f"/image/JPEG/{i}?w=320&h=240") for i in range(600)], server


class Tracker:
    """Polls the expected metadata.json files and records when each was written."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.pending: dict[str, tuple[Path, float]] = {}
        self.done: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def expect(self, key: str, folder: Path, inserted_at: float) -> None:
        with self.lock:
            self.pending[key] = (folder / "metadata.json", inserted_at)

    def run(self) -> None:
        parsed: dict[str, float] = {}  # key -> mtime of the last parse: each version read once
        while not self.stop.wait(0.005):
            with self.lock:
                items = list(self.pending.items())
            for key, (path, inserted_at) in items:
                try:
                    mtime = path.stat().st_mtime
                    if parsed.get(key) == mtime:
                        continue
                    parsed[key] = mtime
                    meta = json.loads(path.read_text())
                except (FileNotFoundError, ValueError):
                    continue
                if len(meta.get("images", [])) >= 3:
                    with self.lock:
                        self.pending.pop(key, None)
                        self.done[key] = mtime - inserted_at

    def wait_idle(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    return 0
            time.sleep(0.05)
        with self.lock:
            missing = len(self.pending)
            self.pending.clear()
        return missing


def distinct(url: str, n: int) -> str:
    """``url`` made unique by a query parameter the image servers ignore."""
    return f"{url}{'&' if '?' in url else '?'}n={n}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def run_step(coll, jobs, tracker: Tracker, storage: Path, urls: list[str], offset: int,
             rate: float, seconds: float, label: str) -> dict:
    count = int(rate * seconds)
    keys = []
    inserted: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        target = start + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f"{label}-{i}"
        # Every image a URL of its own (a query the server ignores): a URL seen before is
        # copied from the URL index without a request (contract §16), which would measure
        # copies instead of downloads once the corpus wraps around.
        doc = {"name": name, "images": [distinct(urls[(offset + 3 * i + k) % len(urls)],
                                                 offset + 3 * i + k) for k in range(3)]}
        inserted_at = time.time()
        doc_id = coll.insert_one(doc).inserted_id
        tracker.expect(name, storage / DATABASE / coll.name / f"{doc_id}-{name}", inserted_at)
        keys.append(name)
        inserted[str(doc_id)] = inserted_at
    achieved = count / max(1e-9, time.monotonic() - start)
    missing = tracker.wait_idle(60)
    latencies = [tracker.done[k] for k in keys if k in tracker.done]
    result = {"rate": rate, "achieved_rate": round(achieved, 1), "documents": count,
              "delivered": len(latencies), "missing": missing}
    if latencies:
        result.update({f"p{q}_ms": round(percentile(latencies, q) * 1000)
                       for q in (50, 95, 99)})
        result["max_ms"] = round(max(latencies) * 1000)
        result["mean_ms"] = round(statistics.fmean(latencies) * 1000)
    # The listener's share: insert -> change_stream job created (enqueued right after).
    created = [job["created_at"] - inserted[job["document_id"]]
               for job in jobs.find({"collection": coll.name}, {"document_id": 1, "created_at": 1})
               if job["document_id"] in inserted]
    if created:
        result["job_p50_ms"] = round(percentile(created, 50) * 1000)
        result["job_p99_ms"] = round(percentile(created, 99) * 1000)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10,20,30,40,60", help="documents/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="per rate")
    parser.add_argument("--images", choices=("nginx", "loopback"), default="nginx")
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=8)
    parser.add_argument("--validation", choices=("full", "fast"), default="full",
                        help="IMAGE_VALIDATION of the worker")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    base = Path(tempfile.mkdtemp(prefix="bench-listener-"))
    procs: list[subprocess.Popen] = []
    servers = []
    image_server = None
    try:
        urls, image_server = image_urls(args.images)
        mongo = start_embedded_mongo(base / "nx")
        red = start_redis(base / "redis")
        servers += [mongo, red]
        storage = base / "images"
        env = {
            "MONGODB_URI": f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
            "REDIS_URL": f"redis://127.0.0.1:{red.port}/0", "STORAGE_PATH": str(storage),
            "WATCH_NAMESPACES": f"{DATABASE}.*", "JOBS_DATABASE": "bench_jobs",
            "ALLOW_PRIVATE_NETWORKS": "false", "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
            "ENVIRONMENT": "development", "LOG_LEVEL": "WARNING",
            "IMAGE_VALIDATION": args.validation,
            "WORKER_METRICS_PORT": str(free_port()), "LISTENER_METRICS_PORT": str(free_port()),
        }
        client = MongoClient(env["MONGODB_URI"], tz_aware=True)
        labels = ["warmup"] + [f"r{int(r)}" for r in rates]
        for label in labels:  # collections exist before the listener starts watching
            client[DATABASE][label].insert_one({"name": "seed"})
        cli = [sys.executable, "-m", "images_service.cli"]
        worker = spawn(cli + ["worker", "--processes", str(args.worker_processes),
                              "--threads", str(args.worker_threads)],
                       {**env, "LOG_LEVEL": "INFO"}, base / "worker.log")
        procs.append(worker)
        listener = spawn(cli + ["listener"], {**env, "LOG_LEVEL": "INFO"}, base / "listener.log")
        procs.append(listener)
        wait_log(base / "worker.log", "Worker process is ready", args.worker_processes, worker)
        wait_log(base / "listener.log", "catch-up scan finished", 1, listener)
        tracker = Tracker(storage)
        jobs = client["bench_jobs"].jobs
        run_step(client[DATABASE]["warmup"], jobs, tracker, storage, urls, 0, 10, 3, "warmup")
        measured = [("listener", listener), ("worker", worker),
                    ("nx-27017", mongo.process), ("redis", red.process), ("bench", None)]
        cpu_before = {name: _cpu(p) for name, p in measured}
        results = []
        offset = 30
        for rate, label in zip(rates, labels[1:], strict=True):
            result = run_step(client[DATABASE][label], jobs, tracker, storage, urls, offset,
                              rate, args.seconds, label)
            offset += 3 * result["documents"]
            results.append(result)
            print(json.dumps(result), flush=True)
        tracker.stop.set()
        cpu = {name: round(_cpu(p) - cpu_before[name], 1) for name, p in measured}
        sustained = [r["rate"] for r in results
                     if r["missing"] == 0 and r.get("p99_ms", 1e9) < P99_LIMIT_S * 1000]
        print()
        print("| rate docs/s | achieved | docs | p50 ms | p95 ms | p99 ms | max ms | missing "
              "| insert→job p50 / p99 ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['rate']:g} | {r['achieved_rate']} | {r['documents']} | "
                  f"{r.get('p50_ms', '-')} | {r.get('p95_ms', '-')} | {r.get('p99_ms', '-')} | "
                  f"{r.get('max_ms', '-')} | {r['missing']} | "
                  f"{r.get('job_p50_ms', '-')} / {r.get('job_p99_ms', '-')} |")
        print(f"\nIMAGE_VALIDATION={args.validation}, images: {args.images}; "
              f"highest sustained rate with p99 < {P99_LIMIT_S:g} s: "
              f"{max(sustained) if sustained else 'none'} docs/s; CPU s during the steps: {cpu}")
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for server in servers:
            server.stop()
        if image_server is not None:
            image_server.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _cpu(proc: subprocess.Popen | None) -> float:
    """User+system CPU seconds of a process and its children (None: this process, with the
    image server's threads when it runs here)."""
    if proc is None:  # not its children: the servers and the service are counted apart
        own = psutil.Process().cpu_times()
        return own.user + own.system
    try:
        root = psutil.Process(proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
