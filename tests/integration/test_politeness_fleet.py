"""Contract §17 with real workers: a 429 pauses its host for every worker process — no
request reaches it until the pause is over (the server's own request log says so) — and the
downloads that waited spend no retry."""

from __future__ import annotations

import json
import threading

from tests.support.image_server import make_image
from tests.support.pipeline import api_client, source_db, wait_job

PAUSE_S = 2.0
#: A request acquired just before the pause was recorded may still arrive this late.
IN_FLIGHT_S = 0.5


class FirstAnswer429:
    """The host's first request gets 429 with Retry-After; every other one an image after
    ``delay_s`` (so that many downloads wait for the host's slots)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.answered_429_at: float | None = None
        self.count = 0

    def __call__(self, req, query) -> None:
        with self.lock:
            self.count += 1
            first = self.count == 1
        if first:
            req.respond(429, b"slow down", {"Retry-After": str(int(PAUSE_S))})
            self.answered_429_at = req.image_server.requests[0].at
            return
        req.wait(self.delay_s)
        req.respond(200, make_image("JPEG", seed=len(req.path)), {"Content-Type": "image/jpeg"})


def test_no_request_reaches_a_paused_host_from_either_worker_process(
        make_settings, make_image_server, start_worker):
    paused_host, other_host = make_image_server("127.0.0.2"), make_image_server("127.0.0.3")
    answer = FirstAnswer429(delay_s=0.05)
    paused_host.add_route("/img/", answer, prefix=True)
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "MAX_CONCURRENT_PER_DOMAIN": "2", "RETRY_BACKOFF_MIN_MS": "100",
                              "RETRY_BACKOFF_MAX_MS": "10000"})
    db = source_db(settings)
    db.hotels.drop()
    # 12 documents of 4 images (3 on the host that will pause): two messages, one per process
    db.hotels.insert_many([
        {"name": f"h{i}", "images": [paused_host.url(f"/img/{i}-{k}.jpg") for k in range(3)]
         + [other_host.url(f"/image/PNG/{i}")]} for i in range(12)])
    start_worker(settings, processes=2, threads=4)
    client = api_client(settings)

    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels")
                   .json["job_id"], timeout_s=90)

    assert job["status"] == "completed"
    assert job["progress"]["images_downloaded"] == 48 and job["progress"]["images_failed"] == 0
    t429 = answer.answered_429_at
    arrivals = sorted(r.at for r in paused_host.requests)
    during = [round(t - t429, 3) for t in arrivals if t429 + IN_FLIGHT_S <= t < t429 + PAUSE_S]
    assert during == [], f"requests during the pause: {during}"
    assert len(arrivals) == 36 + 1  # every image once, the 429's image twice
    assert sum(1 for t in arrivals if t >= t429 + PAUSE_S) >= 30  # the rest waited for it
    # the downloads that waited for the pause spent no attempt
    attempts = sorted(record["attempts"]
                      for meta in settings.storage_path.rglob("metadata.json")
                      for record in json.loads(meta.read_text())["images"])
    assert attempts == [1] * 47 + [2]
