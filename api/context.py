"""The api's handles on settings and backing services, built once per app by the factory."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from dramatiq.brokers.redis import RedisBroker
from flask import current_app
from pymongo import MongoClient

from images_service.backends import HEALTH_TIMEOUT_MS, mongo_client, redis_client
from images_service.config.settings import Settings
from images_service.jobs.documents import JobDocuments
from images_service.jobs.store import JobStore
from images_service.jobs.triggers import Triggers
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage

EXTENSION_KEY = "images_service"
#: Request-path timeouts: a backing service that does not answer becomes a quick 503.
REQUEST_TIMEOUT_MS = 3000


@dataclass
class ApiServices:
    settings: Settings
    mongo: MongoClient
    redis: redis.Redis
    broker: RedisBroker
    jobs: JobStore
    #: A job's finished documents (the console's job page lists them).
    job_documents: JobDocuments
    triggers: Triggers
    #: Separate clients with short timeouts so `/health` answers within the contract's 5 s.
    health_mongo: MongoClient
    health_redis: redis.Redis
    #: The image store (contract §11): the api will serve files from it.
    storage: Storage
    health_storage: Storage

    @classmethod
    def build(cls, settings: Settings) -> "ApiServices":
        mongo = mongo_client(settings, timeout_ms=REQUEST_TIMEOUT_MS, app="images-service-api")
        red = redis_client(settings, timeout_s=REQUEST_TIMEOUT_MS / 1000)
        # The api only enqueues: its broker is not Dramatiq's global and needs no actors.
        broker = build_broker(settings, client=red, producer=True)
        jobs = JobStore(mongo, settings.jobs_database, retention_days=settings.job_retention_days)
        return cls(
            settings=settings,
            mongo=mongo,
            redis=red,
            broker=broker,
            jobs=jobs,
            job_documents=JobDocuments(mongo, settings.jobs_database,
                                       retention_days=settings.job_retention_days),
            triggers=Triggers(settings, mongo, red, jobs, Enqueuer(broker)),
            health_mongo=mongo_client(settings, timeout_ms=HEALTH_TIMEOUT_MS, app="images-service-health"),
            health_redis=redis_client(settings, timeout_s=HEALTH_TIMEOUT_MS / 1000),
            storage=create_storage(settings, connect_timeout_s=REQUEST_TIMEOUT_MS / 1000),
            # One attempt with short timeouts: a hung bucket is a quick "error", not a 5 s wait.
            health_storage=create_storage(
                settings,
                connect_timeout_s=HEALTH_TIMEOUT_MS / 1000,
                read_timeout_s=HEALTH_TIMEOUT_MS / 1000,
                max_attempts=1,
            ),
        )

    def close(self) -> None:
        self.mongo.close()
        self.health_mongo.close()
        self.redis.close()
        self.health_redis.close()
        self.storage.close()
        self.health_storage.close()


def services() -> ApiServices:
    return current_app.extensions[EXTENSION_KEY]
