"""What one document's job costs the worker in MongoDB commands and messages (issue 24, the
listener path).

Every change-stream insert is a job of one document, and at a steady rate of inserts the
round trips per job are the limit (docs/throughput.md "The listener path"). The pipeline in
this process, on nx-27017, with a command listener on its client: a one-document job sends
exactly the commands listed here, and a change-stream job is one message, not two.
"""

from __future__ import annotations

import redis
from pymongo import MongoClient, monitoring

from images_service.jobs.store import JobStore
from images_service.jobs.triggers import Triggers
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import DOCUMENTS_ACTOR, Enqueuer
from tests.support.pipeline import Rig, source_db
from workers.pipeline import DownloadPipeline


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.recording = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording:
            target = event.command.get(event.command_name)
            self.seen.append((event.command_name, target if isinstance(target, str) else ""))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def _recorded_pipeline(make_settings, image_server):
    """Settings, a Rig, and a pipeline (with the listener's Triggers) whose MongoDB client
    records its commands."""
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true",
                              "API_RATE_LIMIT": "100000/minute"})
    source_db(settings).hotels.drop()
    rig = Rig(settings, image_server)
    commands = Commands()
    red = redis.Redis.from_url(settings.redis_url)
    mongo = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[commands])
    enqueuer = Enqueuer(build_broker(settings, client=red))
    pipeline = DownloadPipeline(settings, mongo=mongo, redis_client=red, enqueuer=enqueuer)
    triggers = Triggers(settings, mongo, red, JobStore(mongo, settings.jobs_database), enqueuer)
    return settings, rig, commands, pipeline, triggers


def test_a_one_document_job_costs_the_worker_eight_mongodb_commands(make_settings,
                                                                    image_server) -> None:
    settings, rig, commands, pipeline, _ = _recorded_pipeline(make_settings, image_server)
    try:
        # Given a worker that has done one job already (indexes are made once per process)
        rig.db.hotels.insert_one({"_id": "h0", "name": "Sol", "images": [
            image_server.url("/image/PNG/z")]})
        first = rig.client.post("/api/v1/download/document/serpy_db/hotels/h0").json["job_id"]
        pipeline.scan(first)
        pipeline.download_documents(*rig.messages(DOCUMENTS_ACTOR, first)[0])
        assert rig.job(first)["status"] == "completed"
        # and a document with two images and its job (created as the API creates one)
        rig.db.hotels.insert_one({"_id": "h1", "name": "Ritz", "images": [
            image_server.url("/image/PNG/a"), image_server.url("/image/JPEG/b")]})
        job_id = rig.client.post("/api/v1/download/document/serpy_db/hotels/h1").json["job_id"]

        # When the worker scans it and downloads its message
        commands.recording = True
        pipeline.scan(job_id)
        (args,) = rig.messages(DOCUMENTS_ACTOR, job_id)
        pipeline.download_documents(*args)
        commands.recording = False

        # Then the job completed, and these were all its commands (the URL index's writes go
        # in batches from a thread of their own, shared by every job: not counted here)
        assert rig.job(job_id)["status"] == "completed"
        jobs = settings.jobs_database
        assert [c for c in commands.seen if c[1] != "urls" or c[0] != "update"] == [
            # scan: the job, read and moved pending -> running in one command (its status also
            # answers "stopped?"), the document (no collection listing: the document shows
            # it exists), the totals
            ("findAndModify", "jobs"), ("find", "hotels"), ("update", "jobs"),
            # download: the job, the URL index's copies, the write-back, the console's row,
            # the job's end with its progress and errors (one write)
            ("find", "jobs"), ("find", "urls"), ("update", "hotels"),
            ("update", "job_documents"), ("findAndModify", "jobs"),
        ], (jobs, commands.seen)
    finally:
        pipeline.close()
        rig.close()


def test_a_change_stream_job_is_one_message_and_six_mongodb_commands(make_settings,
                                                                      image_server) -> None:
    settings, rig, commands, pipeline, triggers = _recorded_pipeline(make_settings, image_server)
    try:
        # Given a worker that has done one job already (indexes are made once per process)
        rig.db.hotels.insert_many([
            {"_id": "h0", "name": "Sol", "images": [image_server.url("/image/PNG/z")]},
            {"_id": "h1", "name": "Ritz", "images": [image_server.url("/image/PNG/a"),
                                                     image_server.url("/image/JPEG/b")]}])
        first = triggers.change_stream_job("serpy_db", "hotels", "h0", trigger="insert")["_id"]
        pipeline.scan(first)
        assert rig.job(first)["status"] == "completed"
        # and the listener's job for an inserted document (created as the listener does)
        job_id = triggers.change_stream_job("serpy_db", "hotels", "h1", trigger="insert")["_id"]

        # When the worker takes its scan message
        commands.recording = True
        pipeline.scan(job_id)
        commands.recording = False

        # Then the document was downloaded by that message: no second message, and the job
        # completed with its counts
        assert rig.messages(DOCUMENTS_ACTOR, job_id) == []
        job = rig.job(job_id)
        assert job["status"] == "completed" and job["started_at"] and job["finished_at"]
        assert (job["progress"]["documents_total"], job["progress"]["documents_done"],
                job["progress"]["images_downloaded"]) == (1, 1, 2)
        meta = settings.storage_path / "serpy_db/hotels/h1-ritz/metadata.json"
        assert meta.is_file()
        # and these were all its commands
        assert [c for c in commands.seen if c[1] != "urls" or c[0] != "update"] == [
            # the job, read and moved pending -> running in one command; its document (the
            # totals go with the end: the API shows them live from Redis until then)
            ("findAndModify", "jobs"), ("find", "hotels"),
            # the download: the URL index's copies, the write-back, the console's row, the
            # job's end with its progress (one write)
            ("find", "urls"), ("update", "hotels"), ("update", "job_documents"),
            ("findAndModify", "jobs"),
        ], commands.seen
    finally:
        pipeline.close()
        rig.close()
