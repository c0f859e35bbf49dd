#!/usr/bin/env python3
"""CPU per image of each step of the download engine, on one thread (issue 24, item 3).

Runs :func:`images_service.download.engine.download_document` over the shared loopback
corpus (``good.txt``, ``--per-doc`` URLs per synthetic document, one document after the
other, one image after the other: ``max_workers=1``), with the settings the service bench
gives the worker (SSRF guard on with ``127.0.0.0/27`` allowed, ``IMAGE_VALIDATION``,
filesystem storage, the process-local folder lock: no Redis, no MongoDB, no Dramatiq). The
engine's steps are wrapped with a CPU-time accumulator (``time.thread_time``; one thread, so
it is the process's CPU; a wrapper costs ~1 µs):

* ``fetch``: ``Fetcher.fetch`` — the guarded HTTP request, the body streamed to a temporary
  file with its sha256 (the sha256 alone is timed afterwards over the same files, in memory);
* ``validate``: ``variants.validate`` (``validate_image``), split into the full decode
  (``validation.core._decode``), the perceptual hash and luminance (``content_facts``) and the
  rest (``Image.open`` header parse, size checks, the record);
* ``store original``: ``DocumentFolder.store_original`` (temp file → ``original/``, rename);
* ``folder open`` and ``merge``: metadata.json read, claim and merged write (fsynced);
* the rest of the pass (planning, records, the loop) is what is left of the pass's CPU.

Each row is the best of ``--passes`` passes (the output folder wiped between them). The
service adds to this what only the worker does (Redis slots and claims, folder locks, the
progress, the URL index, the write-back, Dramatiq): ``service_bench.py --py-spy`` with
``profile_top.py --stages``.

    .venv/bin/python bench/engine_stages.py --validation full --passes 2
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from images_service.config.settings import load_settings  # noqa: E402
from images_service.download import engine, variants  # noqa: E402
from images_service.download.folder import DocumentFolder  # noqa: E402
from images_service.fetching.fetcher import Fetcher  # noqa: E402
from images_service.storage.factory import create_storage  # noqa: E402
from images_service.validation import core  # noqa: E402

CPU_S: dict[str, float] = defaultdict(float)


def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its thread CPU added to ``CPU_S[name]`` (nested timers overlap)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            CPU_S[name] += time.thread_time() - started
    return wrapper


def install() -> None:
    Fetcher.fetch = timed("fetch", Fetcher.fetch)
    variants.validate = timed("validate", variants.validate)
    core._decode = timed("decode", core._decode)
    core.content_facts = timed("phash", core.content_facts)
    DocumentFolder.store_original = timed("store", DocumentFolder.store_original)
    DocumentFolder.open = timed("open", DocumentFolder.open)
    DocumentFolder.merge = timed("merge", DocumentFolder.merge)


def one_pass(urls: list[str], per_doc: int, out: Path, validation: str) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    settings = load_settings({"STORAGE_PATH": str(out), "ALLOW_PRIVATE_NETWORKS": "false",
                              "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
                              "IMAGE_VALIDATION": validation})
    docs = [{"_id": f"doc{n:05d}", "name": f"Bench document {n}", "images": urls[i:i + per_doc]}
            for n, i in enumerate(range(0, len(urls), per_doc))]
    fetcher = Fetcher(settings)
    storage = create_storage(settings, max_pool_connections=1)
    CPU_S.clear()
    ok = 0
    started = time.thread_time()
    for doc in docs:
        meta = engine.download_document(doc, "bench", "images", settings, job_id="bench",
                                        storage=storage, fetcher=fetcher, max_workers=1)
        ok += sum(1 for r in meta["images"] if r["status"] == "downloaded")
    total = time.thread_time() - started
    fetcher.close()
    storage.close()
    # The sha256 the fetcher computes while streaming, alone: over the stored files' bytes.
    bodies = [p.read_bytes() for p in out.rglob("original/*")]
    started = time.thread_time()
    for body in bodies:
        hashlib.sha256(body).hexdigest()
    sha_s = time.thread_time() - started
    shutil.rmtree(out, ignore_errors=True)
    return {"ok": ok, "total": total, "sha256": sha_s, **CPU_S}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--urls", default="/tmp/bench-urls/good.txt")
    ap.add_argument("--out", default="/tmp/bench-out-engine-stages")
    ap.add_argument("--per-doc", type=int, default=5)
    ap.add_argument("--validation", choices=("full", "fast"), default="full")
    ap.add_argument("--passes", type=int, default=2)
    a = ap.parse_args()
    urls = [u.strip() for u in Path(a.urls).read_text().splitlines() if u.strip()]
    install()
    runs = [one_pass(urls, a.per_doc, Path(a.out), a.validation) for _ in range(a.passes)]
    best = min(runs, key=lambda r: r["total"])
    n = max(1, best["ok"])
    ms = {k: 1000 * v / n for k, v in best.items() if k != "ok"}
    for key in ("decode", "phash"):  # fast mode: no decode, no hash (without PERCEPTUAL_HASH)
        ms.setdefault(key, 0.0)
    rows = [
        ("HTTP fetch + stream to temp + sha256", ms["fetch"]),
        ("  of which sha256 (alone, in memory)", ms["sha256"]),
        ("validation: header parse, checks, record", ms["validate"] - ms["decode"] - ms["phash"]),
        ("validation: full decode (Pillow load)", ms["decode"]),
        ("perceptual hash + luminance", ms["phash"]),
        ("store original (rename into original/)", ms["store"]),
        ("metadata.json open (read, claim, write)", ms["open"]),
        ("metadata.json merge + write", ms["merge"]),
        ("rest (planning, records, loop)", ms["total"] - ms["fetch"] - ms["validate"]
         - ms["store"] - ms["open"] - ms["merge"]),
        ("total", ms["total"]),
    ]
    print(f"engine, one thread, IMAGE_VALIDATION={a.validation}, {best['ok']}/{len(urls)} "
          f"images, {a.per_doc} per document; best of {a.passes} passes "
          f"(totals {', '.join(format(r['total'], '.2f') for r in runs)} CPU-s)")
    for name, value in rows:
        print(f"{value:7.3f} CPU-ms/image  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
