"""Contract §14, memory: a burst of images near MAX_IMAGE_PIXELS with a variant configured
keeps a worker within its idle size + 256 MiB + 8 bytes per pixel of DECODE_BUDGET_PIXELS.

Palette PNGs compress to a few KB whatever their size, so the burst costs nothing to send and
everything to decode: each 3900×3900 one is ~15 MB as a palette image and several times that
once converted for its thumbnail. Twelve of them decoded at once (the worker has 18 download
threads here) would take well over a GiB; the budget lets them through one at a time.
"""

from __future__ import annotations

import io
import threading

import psutil
from PIL import Image

from tests.support.pipeline import api_client, source_db, wait_job

MAX_PIXELS = 16_000_000
SIDE = 3900  # 15.2 M pixels: just under MAX_IMAGE_PIXELS
MIB = 1024 * 1024


def palette_png(seed: int) -> bytes:
    image = Image.new("P", (SIDE, SIDE), seed % 256)
    image.putpalette([(i * 7 + seed) % 256 for i in range(768)])
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_a_burst_of_large_images_with_variants_keeps_memory_bounded(
        make_settings, start_worker, image_server):
    settings = make_settings({
        "ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
        "MAX_IMAGE_PIXELS": str(MAX_PIXELS), "MAX_IMAGE_BYTES": str(64 * MIB),
        "MAX_CONCURRENT_DOWNLOADS": "16", "MAX_CONCURRENT_PER_DOMAIN": "16",
        "PROCESSED_VARIANTS": "thumb:64x64:fit:webp:80",
    })
    urls = []
    for n in range(12):
        image_server.set_response(f"/large/{n}.png", body=palette_png(n),
                                  headers={"Content-Type": "image/png"})
        urls.append(image_server.url(f"/large/{n}.png"))
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many([{"name": "a", "images": urls[:6]}, {"name": "b", "images": urls[6:]}])
    worker = start_worker(settings, processes=1, threads=2)
    idle = tree_rss(worker.proc.pid)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], tree_rss(worker.proc.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        client = api_client(settings)
        job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels")
                       .json["job_id"], timeout_s=120)
    finally:
        done.set()
        sampler.join()

    assert job["status"] == "completed" and job["progress"]["images_downloaded"] == 12, job
    budget_px = 2 * MAX_PIXELS  # DECODE_BUDGET_PIXELS' default
    allowed = 256 * MIB + 8 * budget_px
    grown = peak[0] - idle
    assert grown <= allowed, f"worker grew {grown / MIB:.0f} MiB, allowed {allowed / MIB:.0f}"
