#!/usr/bin/env python3
"""Benchmark peer: the images-service download engine driven by a plain thread pool.

Reads a URL list (the shared bench's ``good.txt``), makes one synthetic MongoDB-like
document per ``--per-doc`` URLs, and runs :func:`images_service.download.engine.download_document`
for each document on a ``ThreadPoolExecutor``: guarded fetch (SSRF guard on, with
``PRIVATE_NETWORK_ALLOWLIST=127.0.0.0/27`` so the loopback bench hosts are reachable),
Pillow validation with one full decode, atomic store into the contract layout, and one
metadata.json per document. All documents share one Fetcher (one session per thread).

``--processes P`` runs P forked processes with ``--threads`` threads each, like the service's
worker (WORKER_PROCESSES x WORKER_THREADS); documents are dealt round-robin.

Prints, in the shared bench's format (``seconds`` covers the download phase only):
    engine images=N ok=K seconds=S images_per_s=R
and a second line with CPU seconds (this process and its children) and peak RSS of the
largest single process.

Run with the service's venv:  .venv/bin/python bench/engine_peer.py [--threads 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from images_service.config.settings import Settings, load_settings  # noqa: E402
from images_service.download import engine  # noqa: E402
from images_service.fetching.fetcher import Fetcher  # noqa: E402
from images_service.storage.factory import create_storage  # noqa: E402


def download(settings: Settings, docs: list[dict], threads: int) -> tuple[int, dict[str, int]]:
    """Download ``docs`` on a thread pool; return (images downloaded, error code counts)."""
    errors: dict[str, int] = {}
    ok = 0
    fetcher = Fetcher(settings)
    storage = create_storage(settings, max_pool_connections=threads)

    def run(doc: dict) -> dict:
        return engine.download_document(doc, "bench", "images", settings, job_id="bench",
                                        storage=storage, fetcher=fetcher, max_workers=1)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for meta in pool.map(run, docs):
            for record in meta["images"]:
                if record["status"] == "downloaded":
                    ok += 1
                else:
                    code = record.get("error", {}).get("code", record["status"])
                    errors[code] = errors.get(code, 0) + 1
    # Closing the pools is teardown, outside the timed phase in spirit; it is quick anyway.
    fetcher.close()
    storage.close()
    return ok, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--urls", default="/tmp/bench-urls/good.txt")
    ap.add_argument("--out", default="/tmp/bench-out-engine")
    ap.add_argument("--threads", type=int, default=32, help="threads per process")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--per-doc", type=int, default=1, help="URLs per synthetic document")
    ap.add_argument("--timeout", type=float, default=30.0, help="DOWNLOAD_TIMEOUT seconds")
    ap.add_argument("--label", default="engine")
    a = ap.parse_args()
    if not os.path.basename(os.path.normpath(a.out)).startswith("bench-out-"):
        sys.exit("--out must be a /tmp/bench-out-* style directory (it is wiped)")
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    with open(a.urls) as f:
        urls = [u.strip() for u in f if u.strip()]

    settings = load_settings({
        "STORAGE_PATH": a.out,
        "ALLOW_PRIVATE_NETWORKS": "false",
        "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
        "DOWNLOAD_TIMEOUT": str(a.timeout),
    })
    docs = [
        {"_id": f"doc{n:05d}", "name": f"Bench document {n}", "images": urls[i:i + a.per_doc]}
        for n, i in enumerate(range(0, len(urls), a.per_doc))
    ]

    t0 = time.perf_counter()
    if a.processes <= 1:
        ok, errors = download(settings, docs, a.threads)
    else:
        # Like the service's worker: several processes, each with its own thread pool.
        context = multiprocessing.get_context("fork")
        with context.Pool(a.processes) as pool:
            parts = pool.starmap(download, [(settings, docs[n::a.processes], a.threads)
                                            for n in range(a.processes)])
        ok = sum(part[0] for part in parts)
        errors = {}
        for _, part_errors in parts:
            for code, n in part_errors.items():
                errors[code] = errors.get(code, 0) + n
    dt = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    for code, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  error x{n}: {code}", file=sys.stderr)
    print(f"{a.label} images={len(urls)} ok={ok} seconds={dt:.3f} images_per_s={ok / dt:.1f}",
          flush=True)
    cpu_s = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    peak_mb = max(usage.ru_maxrss, children.ru_maxrss) / 1024
    print(f"{a.label} cpu_s={cpu_s:.2f} peak_rss_mb_1proc={peak_mb:.0f} processes={a.processes} "
          f"threads={a.threads} per_doc={a.per_doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
