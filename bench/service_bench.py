"""End-to-end benchmark of the service: REST collection job → job completed, metadata written.

Uses the shared loopback corpus (../shared/bench: 2000 images on 127.0.0.2–21:18080, nginx).
Starts its own nx-27017 on a free port, uses the machine's Redis with a dedicated DB (flushed
before and after; default 12), inserts one document per ``--per-doc`` URLs of good.txt,
starts ``images-service worker`` (``--processes`` × ``--threads``) with
``MAX_CONCURRENT_PER_DOMAIN`` (default 8), the SSRF guard on and the bench hosts allowlisted,
triggers the collection through the api (in-process Flask app), and waits for the job.

Configurations (``--configs``, run interleaved: run 1 of every config, then run 2, …, the
order rotated by one each run):

- ``--storage filesystem|s3``: for ``s3`` a SeaweedFS ``weed mini``
  (``images_service/dev/embedded_s3.py``) is started for each run on free loopback ports with a
  temporary directory and a fresh bucket, and the worker gets ``STORAGE_BACKEND=s3``,
  ``S3_BUCKET``, ``S3_ENDPOINT_URL`` and dummy AWS credentials; weed's CPU-seconds and peak RSS
  are reported next to the worker's; weed is stopped after each run.
- ``--validation full|fast`` (``IMAGE_VALIDATION``), ``--variants SPEC``
  (``PROCESSED_VARIANTS``, passed through as is).
- peers: ``naive`` (64 threads) and ``img2dataset`` raw (2 processes × 32 threads), the shared
  runners of ../shared/bench, with the shared loopback guard on ``PYTHONPATH``.

``--configs`` is a ``;``-separated list of ``NAME:key=value,key=value`` (keys: ``storage``,
``validation``, ``variants``, ``processes``, ``threads``, ``per_doc``, ``peer``) or preset
names: ``filesystem``, ``s3``, ``full``, ``fast``, ``naive``, ``img2dataset-raw``.

Measured per run: images/s over the timed window (POST → job completed; the worker's imports
and forks are not timed, ``--warmup``), CPU-seconds (user+sys, psutil deltas over the timed
window) of the worker tree, of this process (the in-process api, the job polling and the
sampler), of nx-27017, of the machine's Redis (``INFO cpu`` delta: server-wide), of weed, and
of nginx; peak and final RSS of the worker tree (sampled every 0.1 s); every image verified
byte-exact (sha256 against ``/tmp/bench-corpus/manifest.json``): for ``filesystem`` each file
named by ``metadata.json``, for ``s3`` every object read back from the bucket. Failures are
printed.

    bash ../shared/bench/server.sh start
    .venv/bin/python bench/service_bench.py --per-doc 5 --runs 3 \\
        --configs "filesystem;s3"
    .venv/bin/python bench/service_bench.py --per-doc 5 --runs 3 \\
        --configs "full;fast;img2dataset-raw;naive"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import redis
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api import create_app  # noqa: E402
from images_service.config.settings import load_settings  # noqa: E402
from images_service.dev.embedded import free_port, start_embedded_mongo  # noqa: E402

# ../shared/bench beside the repository; from a git worktree under /work/wt/<name>, the one
# beside the main checkout.
SHARED = next((p for p in (REPO.parent / "shared" / "bench", REPO.parents[1] / "shared" / "bench")
               if p.is_dir()), REPO.parent / "shared" / "bench")
KEY = "bench-key-0123456789"
MANIFEST = Path("/tmp/bench-corpus/manifest.json")
S3_KEYS = ("bench-access-key", "bench-secret-key")  # dummy: weed runs without identities
BUCKET = "bench-images"

PRESETS = {
    "filesystem": {"storage": "filesystem"},
    "s3": {"storage": "s3"},
    "full": {"validation": "full"},
    "fast": {"validation": "fast"},
    "naive": {"peer": "naive", "threads": 64},
    "img2dataset-raw": {"peer": "img2dataset", "processes": 2, "threads": 32},
}
INT_KEYS = ("processes", "threads", "per_doc")


# ---------------------------------------------------------------------------- measuring


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_of(procs: list[psutil.Process], *, system_only: bool = False) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.system if system_only else t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_of(procs: list[psutil.Process]) -> tuple[int, int]:
    """(sum, largest single) RSS in bytes."""
    total = largest = 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def nginx_cpu() -> float | None:
    try:
        master = psutil.Process(int(Path("/tmp/bench-nginx/nginx.pid").read_text().strip()))
    except (OSError, ValueError, psutil.NoSuchProcess):
        return None
    return cpu_of(tree(master))


def calib_ms() -> float:
    """The shared harness's fixed pure-Python loop: how fast this noisy VM runs right now."""
    t = time.perf_counter()
    x = 0
    for i in range(1_000_000):
        x += i * i
    return (time.perf_counter() - t) * 1000


class Sampler(threading.Thread):
    """Peak RSS of named process groups, every ``interval`` s; optionally the per-host slots."""

    def __init__(self, groups: dict[str, psutil.Process], r: redis.Redis | None = None,
                 interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.groups, self.r, self.interval = groups, r, interval
        self.peak = {name: 0 for name in groups}
        self.peak_one = {name: 0 for name in groups}
        self.max_host_slots = 0
        self.timeline: dict[str, list[int]] = {name: [] for name in groups}  # RSS per sample
        self.halt = threading.Event()

    def sample(self) -> None:
        for name, root in self.groups.items():
            total, largest = rss_of(tree(root))
            self.peak[name] = max(self.peak[name], total)
            self.peak_one[name] = max(self.peak_one[name], largest)
            self.timeline[name].append(total)
        if self.r is not None:
            now_ms = int(time.time() * 1000)
            for key in self.r.scan_iter("isv:caps:host:*"):
                self.max_host_slots = max(self.max_host_slots, self.r.zcount(key, now_ms, "+inf"))

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.halt.set()
        self.join()


class TimelineSampler(threading.Thread):
    """``--timeline``: every 50 ms, the CPU seconds of each worker process (and of nx-27017,
    Redis and this process) and, per worker process, its Dramatiq messages taken from the
    queue and not yet acked (prefetched + in process: the broker's ``__acks__`` sets), plus
    the download queue's length. The worker processes write their own gauges
    (workers/timeline.py); bench/timeline_plot.py joins both."""

    def __init__(self, path: Path, worker: psutil.Process, nx: psutil.Process,
                 r: redis.Redis, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.path, self.r, self.interval = path, r, interval
        self.procs = {p.pid: p for p in tree(worker)}
        self.nx, self.me = nx, psutil.Process()
        self.halt = threading.Event()

    def sample(self) -> dict:
        cpu = {}
        for pid, p in self.procs.items():
            try:
                t = p.cpu_times()
                cpu[str(pid)] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        acks = {}
        for key in self.r.scan_iter("images-service:__acks__.*", count=1000):
            acks[key.decode()] = self.r.scard(key)
        return {"t": time.time(), "cpu": cpu, "nx_cpu": cpu_of(tree(self.nx)),
                "bench_cpu": cpu_of([self.me]), "redis_cpu": redis_cpu(self.r),
                "acks": acks, "queued": self.r.llen("images-service:images-download"),
                "delayed": self.r.zcard("images-service:images-download.DQ")}

    def run(self) -> None:
        with open(self.path, "w") as out:
            next_at = time.monotonic()
            while not self.halt.is_set():
                out.write(json.dumps(self.sample()) + "\n")
                next_at += self.interval
                self.halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        self.join()


# ---------------------------------------------------------------------------- verifying


def expected_sha() -> dict[str, str]:
    """URL path (``good/00000.png``) → sha256 of the corpus file."""
    files = json.loads(MANIFEST.read_text())["files"]
    return {f["path"]: f["sha256"] for f in files}


def url_key(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def check_records(urls: list[str], records: dict[str, tuple[str, str | None]],
                  read: callable, expected: dict[str, str]) -> dict:
    """``records``: url → (stored key, sha256 recorded in metadata.json); ``read(key)`` → bytes
    (or None if missing). Every URL must have a record whose bytes hash to the corpus sha256."""
    exact, failures = 0, []

    def one(url: str) -> tuple[str, str | None]:
        if url not in records:
            return url, "no metadata record"
        key, recorded = records[url]
        body = read(key)
        if body is None:
            return url, f"missing file {key}"
        digest = hashlib.sha256(body).hexdigest()
        if digest != expected.get(url_key(url)):
            return url, f"sha256 mismatch {key}"
        if recorded is not None and recorded != digest:
            return url, f"metadata sha256 differs {key}"
        return url, None

    with ThreadPoolExecutor(8) as pool:
        for url, problem in pool.map(one, urls):
            if problem is None:
                exact += 1
            else:
                failures.append(f"{url}: {problem}")
    return {"exact": exact, "failures": failures}


def metadata_records(documents: list[dict]) -> dict[str, tuple[str, str | None]]:
    records = {}
    for folder, meta in documents:
        for rec in meta.get("images", []):
            if rec.get("file"):
                records[rec["url"]] = (f"{folder}/{rec['file']}", rec.get("sha256"))
    return records


def verify_filesystem(out: Path, urls: list[str], expected: dict[str, str]) -> dict:
    docs = [(str(p.parent), json.loads(p.read_text())) for p in out.rglob("metadata.json")]

    def read(key: str) -> bytes | None:
        try:
            return Path(key).read_bytes()
        except OSError:
            return None

    result = check_records(urls, metadata_records(docs), read, expected)
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "metadata.json"]
    result["stored_files"] = sum(1 for p in files if p.parent.name == "original")
    result["processed_files"] = sum(1 for p in files if "processed" in p.parts)
    result["other_files"] = [str(p) for p in files
                             if p.parent.name != "original" and "processed" not in p.parts][:5]
    result["metadata_files"] = len(docs)
    return result


def verify_s3(client, urls: list[str], expected: dict[str, str]) -> dict:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]

    def read(key: str) -> bytes | None:
        try:
            return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except Exception:  # noqa: BLE001 - a missing object is a failure to report
            return None

    meta_keys = [k for k in keys if k.endswith("/metadata.json")]
    docs = [(k.rsplit("/", 1)[0], json.loads(read(k))) for k in meta_keys]
    result = check_records(urls, metadata_records(docs), read, expected)
    result["stored_files"] = sum(1 for k in keys if "/original/" in k)
    result["processed_files"] = sum(1 for k in keys if "/processed/" in k)
    result["other_files"] = [k for k in keys if not k.endswith("/metadata.json")
                             and "/original/" not in k and "/processed/" not in k][:5]
    result["metadata_files"] = len(meta_keys)
    return result


# ---------------------------------------------------------------------------- one service run


def run_service(cfg: dict, args: argparse.Namespace, urls: list[str], mongo, redis_url: str,
                data: Path, expected: dict[str, str], profile_dir: Path | None,
                timeline_dir: Path | None = None) -> dict:
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    mongo_uri = f"mongodb://127.0.0.1:{mongo.port}"
    env = {
        "MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "STORAGE_PATH": str(out),
        "API_KEY": KEY, "ALLOW_PRIVATE_NETWORKS": "false",
        "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
        "MAX_CONCURRENT_PER_DOMAIN": str(args.per_domain),
        "MAX_CONCURRENT_DOWNLOADS": str(args.fleet), "API_RATE_LIMIT": "100000/minute",
        "JOBS_DATABASE": "bench_jobs", "LOG_LEVEL": "WARNING",
        "WORKER_METRICS_PORT": str(free_port()),
        "IMAGE_VALIDATION": cfg["validation"],
    }
    if cfg.get("variants"):
        env["PROCESSED_VARIANTS"] = cfg["variants"]
    if timeline_dir is not None:
        shutil.rmtree(timeline_dir, ignore_errors=True)
        env["WORKER_TIMELINE_DIR"] = str(timeline_dir / "workers")
    s3 = None
    if cfg["storage"] == "s3":
        from images_service.dev.embedded_s3 import EmbeddedS3

        s3_dir = data / "s3"
        shutil.rmtree(s3_dir, ignore_errors=True)
        # One fresh weed per run (its CPU and RSS are this run's); the readiness probe
        # creates the bucket and PUTs into it, so its first volume exists before the timing.
        s3 = EmbeddedS3(s3_dir, keys=S3_KEYS).start(probe_bucket=BUCKET)
        env.update({
            "STORAGE_BACKEND": "s3", "S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": s3.endpoint_url,
            "S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": S3_KEYS[0], "AWS_SECRET_ACCESS_KEY": S3_KEYS[1],
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        })
        # The api runs in this process: same dummy credentials, no profile of the operator.
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    else:
        env["STORAGE_BACKEND"] = "filesystem"
    settings = load_settings(env)
    client_db = MongoClient(mongo_uri)
    client_db.drop_database("bench_src")
    client_db.drop_database("bench_jobs")
    per_doc = cfg["per_doc"]
    docs = [{"name": f"Bench doc {i}", "images": urls[i: i + per_doc]}
            for i in range(0, len(urls), per_doc)]
    client_db.bench_src.hotels.insert_many(docs)

    log_path = data / "worker.log"
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    worker_env.update(env)
    # The shared loopback guard (connect/DNS outside 127/8 refused) on top of the SSRF guard.
    # ``src=PATH``: the worker runs that checkout's code (e.g. a ``git archive`` of an earlier
    # commit), so before/after runs interleave in one invocation; the api stays this one's.
    worker_env["PYTHONPATH"] = f"{SHARED / 'guard'}{os.pathsep}{cfg.get('src') or REPO}"
    worker_env["BENCH_GUARD_LOG"] = str(args.guard_log)

    def start_worker(extra: dict[str, str]) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "images_service.cli", "worker",
                 "--processes", str(cfg["processes"]), "--threads", str(cfg["threads"])],
                env={**worker_env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=cfg.get("src") or None,  # `-m` puts cwd first
            )

    if cfg.get("backfill"):
        # Backfill: the originals are downloaded first by a worker without variants (not
        # timed); the timed job then makes the variants from storage, with no download.
        prefill = start_worker({"PROCESSED_VARIANTS": ""})
        first = create_app(settings).test_client().post(
            "/api/v1/download/collection/bench_src/hotels", headers={"X-API-Key": KEY}).json
        while create_app(settings).test_client().get(
                f"/api/v1/jobs/{first['job_id']}", headers={"X-API-Key": KEY}
        ).json["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.1)
        os.killpg(prefill.pid, signal.SIGTERM)
        prefill.wait(60)
        worker_env["PROCESSED_VARIANTS"] = cfg["backfill"]
    worker = start_worker({})
    ps = psutil.Process(worker.pid)
    me = psutil.Process()
    nx = psutil.Process(mongo.process.pid)
    weed = psutil.Process(s3.process.process.pid) if s3 else None
    time.sleep(args.warmup)  # imports and forks are not timed: workers idle on their queues
    if worker.poll() is not None:
        raise RuntimeError(f"worker exited: {log_path.read_text()[-2000:]}")

    spy = None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(worker.pid), "--subprocesses", "--format", "raw",
             "--rate", "100", *args.py_spy_args.split(), "-o", str(profile_dir / "worker.raw.txt")],
            stdout=open(profile_dir / "py-spy.log", "wb"), stderr=subprocess.STDOUT)
        time.sleep(1.0)

    groups = {"worker": ps}
    if weed:
        groups["weed"] = weed
    sampler = Sampler(groups, r)
    sampler.sample()
    before = {"worker": cpu_of(tree(ps)),
              "worker_sys": cpu_of(tree(ps), system_only=True), "bench": cpu_of([me]), "nx": cpu_of(tree(nx)),
              "redis": redis_cpu(r), "nginx": nginx_cpu(),
              "weed": cpu_of([weed]) if weed else 0.0}
    sampler.start()
    timeline = None
    if timeline_dir is not None:
        timeline = TimelineSampler(timeline_dir / "bench.jsonl", ps, nx, r)
        timeline.start()
    client = create_app(settings).test_client()
    post_t = time.time()
    started = time.monotonic()
    response = client.post("/api/v1/download/collection/bench_src/hotels",
                           headers={"X-API-Key": KEY})
    job_id = response.json["job_id"]
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": KEY}).json
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    seconds = time.monotonic() - started
    if timeline is not None:
        timeline.stop()
        (timeline_dir / "phases.json").write_text(json.dumps({
            "post": post_t, "completed_seen": post_t + seconds, "images": len(urls),
            "ok": job["progress"]["images_downloaded"], "config": describe(cfg),
            "fleet_cap": args.fleet, "per_host_cap": args.per_domain,
            "processes": cfg["processes"], "threads": cfg["threads"],
            "load_avg": os.getloadavg()}))
    after = {"worker": cpu_of(tree(ps)),
             "worker_sys": cpu_of(tree(ps), system_only=True), "bench": cpu_of([me]), "nx": cpu_of(tree(nx)),
             "redis": redis_cpu(r), "nginx": nginx_cpu(),
             "weed": cpu_of([weed]) if weed else 0.0}
    sampler.stop()
    final_rss, _ = rss_of(tree(ps))
    weed_final = rss_of([weed])[0] if weed else 0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    cpu = {k: after[k] - before[k] for k in before if before[k] is not None and after[k] is not None}
    ok = job["progress"]["images_downloaded"]
    if cfg.get("backfill"):  # every image skipped (no request), its variants made
        ok = job["progress"]["images_skipped"]
    if s3:
        check = verify_s3(s3.client(), urls, expected)
        s3.close()
        shutil.rmtree(data / "s3", ignore_errors=True)
    else:
        check = verify_filesystem(out, urls, expected)
        shutil.rmtree(out, ignore_errors=True)
    all_cpu = cpu["worker"] + cpu["bench"] + cpu["nx"] + cpu["redis"] + cpu.get("weed", 0.0)
    return {
        "images": len(urls), "ok": ok, "failed": job["progress"]["images_failed"],
        "status": job["status"], "seconds": seconds, "images_per_s": ok / seconds,
        "cpu_worker": cpu["worker"], "cpu_bench": cpu["bench"], "cpu_nx": cpu["nx"],
        "cpu_redis": cpu["redis"], "cpu_weed": cpu.get("weed") if s3 else None,
        "cpu_nginx": cpu.get("nginx"), "cpu_all": all_cpu,
        "cpu_ms_per_image": 1000 * all_cpu / max(ok, 1),
        "cpu_ms_per_image_worker": 1000 * cpu["worker"] / max(ok, 1),
        # the kernel's share of the worker's CPU (syscalls: sockets, files, fsync)
        "cpu_ms_per_image_worker_sys": 1000 * cpu["worker_sys"] / max(ok, 1),
        "util": all_cpu / (seconds * 2),
        "peak_rss_mb": sampler.peak["worker"] / 2**20,
        "peak_rss_1proc_mb": sampler.peak_one["worker"] / 2**20,
        "final_rss_mb": final_rss / 2**20,
        # worker tree RSS at each fifth of the timed window: flat over a long run or growing
        "rss_fifths_mb": [round(line[min(len(line) - 1, len(line) * k // 5)] / 2**20)
                          for line in [sampler.timeline["worker"] or [0]] for k in range(1, 6)],
        "weed_peak_rss_mb": sampler.peak.get("weed", 0) / 2**20 if s3 else None,
        "weed_final_rss_mb": weed_final / 2**20 if s3 else None,
        "max_host_slots": sampler.max_host_slots,
        "exact": check["exact"], "stored_files": check["stored_files"],
        "processed_files": check["processed_files"], "metadata_files": check["metadata_files"],
        "other_files": check["other_files"], "failures": check["failures"][:20],
        "n_failures": len(check["failures"]),
    }


# ---------------------------------------------------------------------------- one peer run


def run_peer(cfg: dict, args: argparse.Namespace) -> dict:
    if cfg["peer"] == "naive":
        py, script = "/tmp/bench-venv-base/bin/python", SHARED / "peers" / "naive.py"
        extra, out, layout = ["--threads", str(cfg["threads"])], "/tmp/bench-out-naive", "mirror"
    else:
        py, script = "/tmp/bench-venv-img2dataset/bin/python", SHARED / "peers" / "img2dataset_peer.py"
        extra = ["--mode", "raw", "--processes", str(cfg["processes"]),
                 "--threads", str(cfg["threads"])]
        out, layout = "/tmp/bench-out-img2dataset", "img2dataset"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(SHARED / "guard"), "BENCH_GUARD_LOG": str(args.guard_log),
           "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    nginx_before = nginx_cpu()
    started = time.monotonic()
    proc = subprocess.Popen([py, str(script), "--urls", args.urls, "--out", out, *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler({"peer": psutil.Process(proc.pid)})
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # usage includes the peer's reaped children
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    sampler.stop()
    nginx_after = nginx_cpu()
    match = re.search(r"images=(\d+) ok=(\d+) seconds=([\d.]+) images_per_s=([\d.]+)", output)
    if not match:
        raise RuntimeError(f"peer {cfg['peer']} printed no result:\n{output[-2000:]}")
    ok, seconds = int(match.group(2)), float(match.group(3))
    check = subprocess.run(["/tmp/bench-venv-base/bin/python", str(SHARED / "verify.py"),
                            "--layout", layout, "--out", out, "--urls", args.urls],
                           capture_output=True, text=True)
    vm = re.search(r"exact=(\d+) reencoded=(\d+) bad=(\d+) missing=(\d+)", check.stdout)
    exact = int(vm.group(1)) if vm else 0
    shutil.rmtree(out, ignore_errors=True)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "images": int(match.group(1)), "ok": ok, "seconds": seconds,
        "images_per_s": float(match.group(4)), "process_wall_s": wall,
        "cpu_worker": cpu, "cpu_all": cpu, "cpu_ms_per_image": 1000 * cpu / max(ok, 1),
        "cpu_ms_per_image_worker": 1000 * cpu / max(ok, 1),
        "util": cpu / (wall * 2),  # CPU includes the peer's start-up, so the wall does too
        "peak_rss_mb": sampler.peak["peer"] / 2**20,
        "peak_rss_1proc_mb": sampler.peak_one["peer"] / 2**20, "final_rss_mb": None,
        "cpu_nginx": (nginx_after - nginx_before) if nginx_before is not None else None,
        "exact": exact, "n_failures": int(match.group(1)) - exact,
        "verify": check.stdout.strip(), "failures": [] if vm and exact == ok else [check.stdout[-500:]],
    }


# ---------------------------------------------------------------------------- configs & table


def parse_configs(text: str, defaults: dict) -> list[tuple[str, dict]]:
    configs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, spec = item.partition(":")
        name = name.strip()
        cfg = dict(defaults)
        cfg.update(PRESETS.get(name, {}))
        if not spec and name not in PRESETS:
            raise SystemExit(f"--configs: unknown preset {name!r} (presets: {', '.join(PRESETS)})")
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            key, _, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if key not in ("storage", "validation", "variants", "backfill", "processes",
                           "threads", "per_doc", "peer", "src"):
                raise SystemExit(f"--configs: unknown key {key!r} in {item!r}")
            cfg[key] = int(value) if key in INT_KEYS else value.strip()
        # variants may contain commas: allow "variants=a:..|b:.." with | as the separator
        for key in ("variants", "backfill"):
            if cfg.get(key):
                cfg[key] = cfg[key].replace("|", ",")
        configs.append((name, cfg))
    return configs


def describe(cfg: dict) -> str:
    if cfg.get("peer") == "naive":
        return f"naive ({cfg['threads']} threads, requests, verify())"
    if cfg.get("peer"):
        return f"img2dataset raw, {cfg['processes']} proc × {cfg['threads']} thr"
    text = (f"service {cfg['storage']}, {cfg['validation']}, {cfg['processes']}p×{cfg['threads']}t, "
            f"{cfg['per_doc']}/doc")
    text += f", worker from {cfg['src']}" if cfg.get("src") else ""
    text += f", variants={cfg['variants']}" if cfg.get("variants") else ""
    return text + (f", backfill={cfg['backfill']}" if cfg.get("backfill") else "")


def med(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(x, nd=1) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def table(results: dict[str, list[dict]], configs: list[tuple[str, dict]], ratio_to: str | None) -> str:
    ref = med(results[ratio_to], "images_per_s") if ratio_to in results else None
    lines = [
        "| config | images/s (median) | runs | vs " + (ratio_to or "-") + " | ok/exact (worst run) "
        "| CPU-s worker/peer | CPU-s bench+nx+redis | CPU-s weed | CPU-s all | CPU-ms/image "
        "| both-core util | peak RSS MB (tree / 1 proc) | final RSS MB | weed peak RSS MB |",
        "|---" * 14 + "|",
    ]
    for name, cfg in configs:
        rows = results[name]
        ips = med(rows, "images_per_s")
        runs = ", ".join(f"{r['images_per_s']:.1f}" for r in rows)
        worst = min(rows, key=lambda r: r["exact"])
        extra = None
        if not cfg.get("peer"):
            extra = statistics.median(r["cpu_bench"] + r["cpu_nx"] + r["cpu_redis"] for r in rows)
        lines.append(
            f"| {name}: {describe(cfg)} | **{fmt(ips)}** | {runs} | "
            f"{fmt(ips / ref, 2) if ref else ''} | {worst['ok']}/{worst['exact']} | "
            f"{fmt(med(rows, 'cpu_worker'), 2)} | {fmt(extra, 2)} | {fmt(med(rows, 'cpu_weed'), 2)} | "
            f"{fmt(med(rows, 'cpu_all'), 2)} | {fmt(med(rows, 'cpu_ms_per_image'), 2)} | "
            f"{fmt(100 * med(rows, 'util'), 0)}% | {fmt(med(rows, 'peak_rss_mb'), 0)} / "
            f"{fmt(med(rows, 'peak_rss_1proc_mb'), 0)} | {fmt(med(rows, 'final_rss_mb'), 0)} | "
            f"{fmt(med(rows, 'weed_peak_rss_mb'), 0)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", default="/tmp/bench-urls/good.txt")
    parser.add_argument("--out", default="/tmp/bench-out-service")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-doc", type=int, default=4)
    parser.add_argument("--per-domain", type=int, default=8)
    parser.add_argument("--fleet", type=int, default=64)
    parser.add_argument("--storage", choices=("filesystem", "s3"), default="filesystem")
    parser.add_argument("--validation", choices=("full", "fast"), default="full")
    parser.add_argument("--variants", default="", help="PROCESSED_VARIANTS, passed as is")
    parser.add_argument("--configs", default="",
                        help='";"-separated NAME:key=value,… or presets; interleaved runs')
    parser.add_argument("--ratio-to", default=None,
                        help="config the ratios are taken against (default: img2dataset-raw if run)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1,
                        help="service configs: the URL list this many times (distinct URLs)")
    parser.add_argument("--warmup", type=float, default=3.0)
    # DB 15: outside the test runs' DBs (TEST_REDIS_DB, default 8-14), which they empty.
    parser.add_argument("--redis-db", type=int, default=15)
    parser.add_argument("--peers", action="store_true", help="also run naive and img2dataset")
    parser.add_argument("--py-spy", default=None, metavar="BINARY",
                        help="profile the worker tree with this py-spy during the first service run")
    parser.add_argument("--py-spy-args", default="--nonblocking",
                        help="extra py-spy record flags, e.g. '--gil --nonblocking' (CPU only)")
    parser.add_argument("--profile-dir", default="/tmp/service-bench-profile")
    parser.add_argument("--json", default="/tmp/service-bench-results.jsonl")
    parser.add_argument("--timeline", default=None, metavar="DIR",
                        help="record every service run's 50 ms timeline under DIR/<config>-run<N>"
                             " (WORKER_TIMELINE_DIR) and draw it (bench/timeline_plot.py)")
    args = parser.parse_args()

    defaults = {"storage": args.storage, "validation": args.validation, "variants": args.variants,
                "processes": args.processes, "threads": args.threads, "per_doc": args.per_doc}
    if args.configs:
        configs = parse_configs(args.configs, defaults)
    else:
        configs = [("service", dict(defaults))]
    if args.peers:
        configs += parse_configs("img2dataset-raw;naive", defaults)
    ratio_to = args.ratio_to or ("img2dataset-raw" if any(n == "img2dataset-raw" for n, _ in configs)
                                 else configs[0][0])

    urls = [u.strip() for u in Path(args.urls).read_text().splitlines() if u.strip()]
    # --repeat: the list again under distinct URLs (a query nginx ignores), for long runs
    # (worker RSS over 20,000 images); the service configs only, the peers read --urls.
    urls = [u if k == 0 else f"{u}?r={k}" for k in range(args.repeat) for u in urls]
    expected = expected_sha()
    missing = [u for u in urls if url_key(u) not in expected]
    if missing:
        raise SystemExit(f"{len(missing)} URLs not in the manifest, e.g. {missing[0]}")
    data = Path(tempfile.mkdtemp(prefix="service-bench-"))
    args.guard_log = data / "guard.log"
    mongo = start_embedded_mongo(data / "mongo")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    results: dict[str, list[dict]] = {name: [] for name, _ in configs}
    profiled = False
    jsonl = open(args.json, "a")
    try:
        for run in range(args.runs):
            order = configs[run % len(configs):] + configs[:run % len(configs)]
            for name, cfg in order:
                calib = calib_ms()
                subprocess.run(["sync"])
                time.sleep(1.0)
                if cfg.get("peer"):
                    row = run_peer(cfg, args)
                else:
                    profile = None
                    if args.py_spy and not profiled:
                        profile, profiled = Path(args.profile_dir), True
                    tl_dir = (Path(args.timeline) / f"{name}-run{run + 1}"
                              if args.timeline else None)
                    row = run_service(cfg, args, urls, mongo, redis_url, data, expected, profile,
                                      tl_dir)
                    if tl_dir is not None:
                        from timeline_plot import analyse, draw

                        summary = analyse(tl_dir)
                        row["timeline"] = summary
                        print(f"timeline {name} run {run + 1}: {json.dumps(summary)}", flush=True)
                        try:
                            draw(tl_dir, tl_dir / "timeline.png")
                        except ImportError:
                            print("  (no matplotlib: pip install -c constraints.txt -e '.[bench]')")
                row.update({"config": name, "run": run + 1, "calib_ms": calib,
                            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                            # the machine's load after the run (shared with other sessions)
                            "load_avg": [round(x, 2) for x in os.getloadavg()]})
                results[name].append(row)
                jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
                short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                         if k not in ("failures", "other_files", "verify")}
                print(f"run {run + 1} {name}: {json.dumps(short)}", flush=True)
                problems = row.get("failures") or []
                if row["exact"] != len(urls) or problems or row.get("other_files"):
                    print(f"  VERIFY FAILURES ({name}, run {run + 1}): exact={row['exact']}/"
                          f"{len(urls)} {problems[:20]} other={row.get('other_files')}", flush=True)
    finally:
        mongo.stop()
        redis.Redis.from_url(redis_url).flushdb()
        shutil.rmtree(data, ignore_errors=True)
        jsonl.close()
    guard = args.guard_log.read_text() if args.guard_log.exists() else ""
    print()
    print(table(results, configs, ratio_to))
    print()
    print(f"verification: every run {'byte-exact ' + str(len(urls)) + '/' + str(len(urls)) if all(r['exact'] == len(urls) for rows in results.values() for r in rows) else 'HAD FAILURES (see above)'}; "
          f"loopback guard blocked: {'nothing' if not guard else guard[:500]}")
    services = [r for name, cfg in configs if not cfg.get("peer") for r in results[name]]
    if services:
        print(f"highest per-host slot count seen in Redis: {max(r['max_host_slots'] for r in services)} "
              f"(cap {args.per_domain}); processed/ files: "
              f"{sorted({r['processed_files'] for r in services})}; calib_ms (noise): "
              f"{min(r['calib_ms'] for rows in results.values() for r in rows):.0f}–"
              f"{max(r['calib_ms'] for rows in results.values() for r in rows):.0f}")
    # Legacy single-line summary (the shared harness parses it)
    name0 = configs[0][0]
    if not configs[0][1].get("peer"):
        rows = results[name0]
        median = med(rows, "images_per_s")
        best = min(rows, key=lambda r: abs(r["images_per_s"] - median))
        print(f"service images={best['images']} ok={best['ok']} seconds={best['seconds']:.2f} "
              f"images_per_s={median:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
