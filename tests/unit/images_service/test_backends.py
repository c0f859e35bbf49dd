"""Health-check failure messages: chosen by exception type, short and stable."""

from __future__ import annotations

import pytest
import redis
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from images_service.backends import (
    AUTH_FAILED,
    CHECK_FAILED,
    UNREACHABLE,
    mongo_failure,
    redis_failure,
)


@pytest.mark.parametrize(("exc", "message"), [
    (ServerSelectionTimeoutError("db:27017: [Errno 111] Connection refused"), UNREACHABLE),
    (AutoReconnect("connection closed"), UNREACHABLE),
    (NetworkTimeout("timed out"), UNREACHABLE),
    (OperationFailure("Authentication failed.", code=18), AUTH_FAILED),
    (OperationFailure("not authorized on admin", code=13), AUTH_FAILED),
    (OperationFailure("something else", code=2), CHECK_FAILED),
    (ConfigurationError("bad option"), CHECK_FAILED),
    (KeyError("payload"), CHECK_FAILED),  # nx-27017 answering a SCRAM login
])
def test_mongo_failures(exc: Exception, message: str) -> None:
    assert mongo_failure(exc) == message


@pytest.mark.parametrize(("exc", "message"), [
    (redis.ConnectionError("Error 111 connecting to cache:6379. Connection refused."), UNREACHABLE),
    (redis.TimeoutError("Timeout connecting to server"), UNREACHABLE),
    (redis.AuthenticationError("invalid username-password pair"), AUTH_FAILED),
    (redis.exceptions.NoPermissionError("NOPERM this user has no permissions"), AUTH_FAILED),
    (redis.ResponseError("LOADING Redis is loading the dataset in memory"), CHECK_FAILED),
])
def test_redis_failures(exc: Exception, message: str) -> None:
    assert redis_failure(exc) == message
