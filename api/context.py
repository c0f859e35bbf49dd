"""The api's handles on settings and backing services, built once per app by the factory."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from pymongo import MongoClient

from images_service.backends import HEALTH_TIMEOUT_MS, mongo_client, redis_client
from images_service.settings import Settings

EXTENSION_KEY = "images_service"


@dataclass
class ApiServices:
    settings: Settings
    mongo: MongoClient
    redis: redis.Redis
    #: Separate clients with short timeouts so `/health` answers within the contract's 5 s.
    health_mongo: MongoClient
    health_redis: redis.Redis

    @classmethod
    def build(cls, settings: Settings) -> "ApiServices":
        return cls(
            settings=settings,
            mongo=mongo_client(settings, timeout_ms=3000, app="images-service-api"),
            redis=redis_client(settings, timeout_s=3.0),
            health_mongo=mongo_client(settings, timeout_ms=HEALTH_TIMEOUT_MS, app="images-service-health"),
            health_redis=redis_client(settings, timeout_s=HEALTH_TIMEOUT_MS / 1000),
        )

    def close(self) -> None:
        self.mongo.close()
        self.health_mongo.close()
        self.redis.close()
        self.health_redis.close()


def services() -> ApiServices:
    return current_app.extensions[EXTENSION_KEY]
