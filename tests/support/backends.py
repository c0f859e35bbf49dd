"""pytest fixtures for the backing services: nx-27017 on a free port and the real Redis.

Redis: the machine's server on 127.0.0.1:6379 is used with a dedicated DB number that is
flushed around each test, never FLUSHALL; when no Redis answers there, a private redis-server
is started on a free port instead. Each test session (each xdist process) claims the first DB
whose claim key is free among those ``TEST_REDIS_DB`` names (``5``, ``5,6,7,8``, ``8-11``; by
default 14, 13, ... 8), so two test processes or runs on one machine never flush each other's
data or steal each other's messages.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from images_service.config.settings import Settings, load_settings
from images_service.dev.embedded import ManagedProcess, port_open, start_embedded_mongo, start_redis
from images_service.storage.backend import Storage

CLAIM_KEY = "__images_service_test_session__"
CLAIM_TTL_S = 3600
#: Tried in this order when TEST_REDIS_DB is not set.
DEFAULT_DBS = list(range(14, 7, -1))


def parse_test_redis_dbs(value: str) -> list[int]:
    """The DBs ``TEST_REDIS_DB`` names, in its order: ``5``, ``5,6,7,8``, ``8-11`` (inclusive,
    ``11-8`` counts down) or a mix (``3,8-11``); empty means :data:`DEFAULT_DBS`.

    Each test process (xdist worker) claims the first free one, so give at least as many DBs
    as ``TEST_WORKERS`` (4 by default).
    """
    if not value.strip():
        return list(DEFAULT_DBS)
    dbs: list[int] = []
    for part in value.split(","):
        bounds = part.strip().split("-")
        if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise ValueError(f"TEST_REDIS_DB={value!r}: {part.strip()!r} is not a DB number "
                             "(0, 1, …) nor a range such as 8-11; expected e.g. 5 or 5,6,7,8 "
                             "or 8-11")
        first, last = int(bounds[0]), int(bounds[-1])
        step = 1 if last >= first else -1
        dbs += [db for db in range(first, last + step, step) if db not in dbs]
    return dbs


CANDIDATE_DBS = parse_test_redis_dbs(os.environ.get("TEST_REDIS_DB", ""))


def _claim_db(base: str) -> tuple[int, str]:
    token = uuid.uuid4().hex
    for db in CANDIDATE_DBS:
        client = redis.Redis.from_url(f"{base}/{db}")
        try:
            if client.set(CLAIM_KEY, token, nx=True, ex=CLAIM_TTL_S):
                return db, token
        finally:
            client.close()
    raise RuntimeError(
        f"every test Redis DB {CANDIDATE_DBS} is claimed by another test process or run: give "
        "TEST_REDIS_DB one DB per test process (TEST_WORKERS, default 4), e.g. TEST_REDIS_DB=8-11")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    server = start_embedded_mongo(tmp_path_factory.mktemp("nx") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: ManagedProcess) -> str:
    return f"mongodb://127.0.0.1:{mongo_server.port}/?directConnection=true"


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = None
    if port_open("127.0.0.1", 6379):
        base = "redis://127.0.0.1:6379"
    else:
        server = start_redis(tmp_path_factory.mktemp("redis"))
        base = f"redis://127.0.0.1:{server.port}"
    db, token = _claim_db(base)
    url = f"{base}/{db}"
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()  # only our test DB (which also drops the claim)
    client.close()
    if server is not None:
        server.stop()


#: Deletes every key of the DB but the session's claim (atomic: the claim is never absent,
#: so another test run can never claim this DB between a flush and a re-claim).
_CLEAR_BUT_CLAIM = """
local n = 0
for _, key in ipairs(redis.call('KEYS', '*')) do
  if key ~= KEYS[1] then redis.call('DEL', key); n = n + 1 end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""


def clear_but_claim(client: redis.Redis) -> None:
    """Empty this session's test DB in one step that keeps its claim (never FLUSHDB while
    the session runs: between a flush and a re-claim another run could take the DB)."""
    client.register_script(_CLEAR_BUT_CLAIM)(keys=[CLAIM_KEY], args=[CLAIM_TTL_S])


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_base_url)
    clear_but_claim(client)  # only our test DB
    yield redis_base_url
    clear_but_claim(client)
    client.close()


@pytest.fixture
def make_settings(
    mongo_uri: str, redis_url: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings pointing at the test servers, with a per-test jobs database and storage."""
    jobs_db = f"jobs_{uuid.uuid4().hex[:10]}"

    def make(env: dict[str, str] | None = None, **overrides: object) -> Settings:
        base = {
            "MONGODB_URI": mongo_uri,
            "REDIS_URL": redis_url,
            "STORAGE_PATH": str(tmp_path / "images"),
            "JOBS_DATABASE": jobs_db,
            "API_KEY": "test-key-0123456789",
            "ENVIRONMENT": "production",
        }
        base.update(env or {})
        return replace(load_settings(base), **overrides)

    return make


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A private Redis server that a test may stop to simulate an outage."""
    server = start_redis(tmp_path / "own-redis")
    yield server
    server.stop()


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A private nx-27017 server that a test may stop to simulate an outage."""
    server = start_embedded_mongo(tmp_path / "own-mongo")
    yield server
    server.stop()


@pytest.fixture(params=["filesystem", "s3"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """The same tree on each backend: a directory, then a bucket of the session's SeaweedFS
    under a key prefix (tests that must hold on both storage backends)."""
    from images_service.storage.filesystem import FilesystemStorage
    from images_service.storage.s3 import S3Storage

    if request.param == "filesystem":
        yield FilesystemStorage(tmp_path / "images")
        return
    server = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("s3_bucket")
    request.getfixturevalue("aws_credentials")
    with S3Storage(bucket, prefix="tree/", endpoint_url=server.endpoint_url,
                   temp_root=tmp_path / "tmp") as store:
        yield store


@pytest.fixture(params=["filesystem", "s3"])
def any_storage_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Settings variables for each backend, for tests that run the api or a worker on both:
    none (the filesystem under ``make_settings``'s STORAGE_PATH), then the session's SeaweedFS
    bucket with a STORAGE_PATH nothing can be written under (so nothing reaches the disk)."""
    if request.param == "filesystem":
        return {}
    from tests.support.s3_layout import unwritable_path

    server = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("s3_bucket")
    request.getfixturevalue("aws_credentials")
    return {"STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": server.endpoint_url,
            "S3_PREFIX": "tree/", "STORAGE_PATH": str(unwritable_path(tmp_path / "local"))}
