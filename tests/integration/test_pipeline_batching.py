"""One download message's finished documents cost two MongoDB writes, not two per document.

In-process (a DownloadPipeline over the real nx-27017, Redis and a loopback image server),
with pymongo's command monitoring counting what the pipeline sends.
"""

from __future__ import annotations

import redis
from pymongo import MongoClient, monitoring

from images_service.download import engine
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from tests.support.pipeline import api_client, source_db
from workers.pipeline import DownloadPipeline
from workers.pipeline.plans import document_key, plan_to_message


class _Writes(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[tuple[str, str, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("update", "findAndModify", "insert", "delete"):
            ops = len(event.command.get("updates", [])) or 1
            self.commands.append((name, str(event.command.get(name)), ops))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_message_writes_back_its_documents_in_one_bulk_write(make_settings, image_server):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true"})
    db = source_db(settings)
    db.hotels.drop()
    ids = db.hotels.insert_many([
        {"name": f"h{i}", "images": [image_server.url(f"/image/JPEG/{i}-{k}") for k in range(2)]}
        for i in range(3)]).inserted_ids
    job_id = api_client(settings).post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    writes = _Writes()
    red = redis.Redis.from_url(settings.redis_url)
    pipeline = DownloadPipeline(
        settings, mongo=MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[writes]),
        redis_client=red, enqueuer=Enqueuer(build_broker(settings, client=red)))
    try:
        plans = [engine.plan_document(doc, "serpy_db", "hotels", settings)
                 for doc in db.hotels.find()]
        ctx = pipeline.ctx
        ctx.progress.start(job_id)
        ctx.progress.plan(job_id, [(document_key(p), len(p.images)) for p in plans])
        ctx.progress.mark_scan_done(job_id)

        pipeline.download_documents(job_id, [plan_to_message(p, _id)
                                             for p, _id in zip(plans, ids)])

        # The three write-backs went as one update command of three statements ...
        hotels = [c for c in writes.commands if c[1] == "hotels"]
        assert hotels == [("update", "hotels", 3)]
        # ... and the job got its progress with its end (completed), in one write.
        job_writes = [c for c in writes.commands if c[1] == "jobs"]
        assert job_writes == [("findAndModify", "jobs", 1)], job_writes
        for doc in db.hotels.find():
            assert doc["images_download"]["status"] == "completed"
            assert doc["images_download"]["downloaded"] == 2
        job = api_client(settings).get(f"/api/v1/jobs/{job_id}").json
        assert job["status"] == "completed" and job["progress"]["images_downloaded"] == 6
    finally:
        pipeline.close()
