"""Settings: every variable of contract §2 read, defaulted and validated."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from images_service.config.settings import Settings, SettingsError, WatchNamespace, load_settings


def test_defaults_are_the_contracts() -> None:
    s = load_settings({})
    assert s.api_keys == ()
    assert s.mongodb_uri == "mongodb://127.0.0.1:27017"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.storage_path == Path("./data/images")
    assert (s.max_concurrent_downloads, s.max_concurrent_per_domain) == (20, 4)
    assert s.download_timeout_s == 15
    assert s.max_image_bytes == 20971520
    assert s.max_image_pixels == 89478485
    assert s.max_retries == 5
    assert (s.retry_backoff_min_ms, s.retry_backoff_max_ms) == (1000, 300000)
    assert s.image_fields == ("images",)
    assert s.search_field == "name"
    assert s.download_flag_field == "download_images"
    assert s.status_field == "images_download"
    assert s.watch_namespaces == (WatchNamespace("serpy_db", "*"),)
    assert s.watch_inserts is True
    assert (s.watch_updates, s.watch_deletes, s.trash_retention_days) == (True, True, 7)
    assert s.jobs_database == "images_service"
    assert s.allow_private_networks is False
    assert s.private_network_allowlist == ()
    assert s.user_agent.startswith("serpy-images/")
    assert s.cors_origins == ()
    assert s.api_rate_limit == "600/minute"
    assert s.environment == "production"
    assert s.log_level == "INFO"
    assert s.port == 8001
    assert s.console_rate_limit == "3000/minute"
    assert s.failed_auth_limit == "20/minute"
    assert s.trusted_proxies == 0


GOOD = [
    ("API_KEY", "k" * 16, "api_keys", ("k" * 16,)),
    ("API_KEYS", "old-key-123,new-key-456", "api_keys", ("old-key-123", "new-key-456")),
    ("MONGODB_URI", "mongodb://mongo:27017/?replicaSet=rs0", "mongodb_uri", "mongodb://mongo:27017/?replicaSet=rs0"),
    ("REDIS_URL", "redis://redis:6379/3", "redis_url", "redis://redis:6379/3"),
    ("STORAGE_PATH", "/images", "storage_path", Path("/images")),
    ("MAX_CONCURRENT_DOWNLOADS", "64", "max_concurrent_downloads", 64),
    ("MAX_CONCURRENT_PER_DOMAIN", "8", "max_concurrent_per_domain", 8),
    ("DOWNLOAD_TIMEOUT", "2.5", "download_timeout_s", 2.5),
    ("MAX_IMAGE_BYTES", "1000", "max_image_bytes", 1000),
    ("MAX_IMAGE_PIXELS", "1000000", "max_image_pixels", 1000000),
    ("MAX_RETRIES", "0", "max_retries", 0),
    ("RETRY_BACKOFF_MIN_MS", "10", "retry_backoff_min_ms", 10),
    ("RETRY_BACKOFF_MAX_MS", "5000", "retry_backoff_max_ms", 5000),
    ("IMAGE_FIELDS", "images, media.gallery", "image_fields", ("images", "media.gallery")),
    ("SEARCH_FIELD", "title", "search_field", "title"),
    ("DOWNLOAD_FLAG_FIELD", "fetch_now", "download_flag_field", "fetch_now"),
    ("STATUS_FIELD", "", "status_field", ""),
    ("STATUS_FIELD", "img_status", "status_field", "img_status"),
    ("WATCH_NAMESPACES", "a.hotels,b.*", "watch_namespaces",
     (WatchNamespace("a", "hotels"), WatchNamespace("b", "*"))),
    ("WATCH_INSERTS", "false", "watch_inserts", False),
    ("WATCH_INSERTS", "1", "watch_inserts", True),
    ("WATCH_UPDATES", "false", "watch_updates", False),
    ("WATCH_DELETES", "false", "watch_deletes", False),
    ("TRASH_RETENTION_DAYS", "0", "trash_retention_days", 0),
    ("TRASH_RETENTION_DAYS", "30", "trash_retention_days", 30),
    ("JOBS_DATABASE", "jobs_db", "jobs_database", "jobs_db"),
    ("ALLOW_PRIVATE_NETWORKS", "true", "allow_private_networks", True),
    ("PRIVATE_NETWORK_ALLOWLIST", "127.0.0.0/8, 10.1.0.0/16", "private_network_allowlist",
     (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"))),
    ("USER_AGENT", "bot/1.0", "user_agent", "bot/1.0"),
    ("CORS_ORIGINS", "https://a.example.com,http://localhost:3000", "cors_origins",
     ("https://a.example.com", "http://localhost:3000")),
    ("API_RATE_LIMIT", "10/second", "api_rate_limit", "10/second"),
    ("API_RATE_LIMIT", "100 per hour", "api_rate_limit", "100 per hour"),
    ("ENVIRONMENT", "Development", "environment", "development"),
    ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("PORT", "9000", "port", 9000),
    ("CONSOLE_RATE_LIMIT", "100/second", "console_rate_limit", "100/second"),
    ("FAILED_AUTH_LIMIT", "100/minute", "failed_auth_limit", "100/minute"),
    ("TRUSTED_PROXIES", "2", "trusted_proxies", 2),
]


@pytest.mark.parametrize(("name", "raw", "attr", "expected"), GOOD)
def test_each_variable_is_read(name: str, raw: str, attr: str, expected: object) -> None:
    assert getattr(load_settings({name: raw}), attr) == expected


BAD = [
    ("API_KEY", "short"),
    ("API_KEYS", "good-key-123,has space"),
    ("MONGODB_URI", "http://mongo:27017"),
    ("REDIS_URL", "mongodb://x:1"),
    ("MAX_CONCURRENT_DOWNLOADS", "0"),
    ("MAX_CONCURRENT_DOWNLOADS", "many"),
    ("MAX_CONCURRENT_PER_DOMAIN", "-1"),
    ("DOWNLOAD_TIMEOUT", "0"),
    ("DOWNLOAD_TIMEOUT", "nan"),
    ("DOWNLOAD_TIMEOUT", "soon"),
    ("MAX_IMAGE_BYTES", "0"),
    ("MAX_IMAGE_BYTES", "1.5"),
    ("MAX_IMAGE_PIXELS", "-5"),
    ("MAX_RETRIES", "-1"),
    ("MAX_RETRIES", "1000"),
    ("RETRY_BACKOFF_MIN_MS", "-1"),
    ("RETRY_BACKOFF_MAX_MS", "x"),
    ("IMAGE_FIELDS", "images,,bad path"),
    ("IMAGE_FIELDS", "a..b"),
    ("SEARCH_FIELD", "$name"),
    ("DOWNLOAD_FLAG_FIELD", "a b"),
    ("STATUS_FIELD", "$status"),
    ("WATCH_NAMESPACES", "nodot"),
    ("WATCH_NAMESPACES", "db.bad name"),
    ("WATCH_NAMESPACES", "bad/db.x"),
    ("WATCH_INSERTS", "maybe"),
    ("WATCH_UPDATES", "sometimes"),
    ("WATCH_DELETES", "2"),
    ("TRASH_RETENTION_DAYS", "-1"),
    ("TRASH_RETENTION_DAYS", "a week"),
    ("JOBS_DATABASE", "a.b"),
    ("ALLOW_PRIVATE_NETWORKS", "2"),
    ("PRIVATE_NETWORK_ALLOWLIST", "127.0.0.0/33"),
    ("PRIVATE_NETWORK_ALLOWLIST", "not-a-cidr"),
    ("CORS_ORIGINS", "example.com"),
    ("API_RATE_LIMIT", "fast"),
    ("API_RATE_LIMIT", "10/fortnight"),
    ("ENVIRONMENT", "staging"),
    ("LOG_LEVEL", "LOUD"),
    ("PORT", "70000"),
    ("WORKER_PROCESSES", "0"),
    ("JOB_RETENTION_DAYS", "0"),
    ("CONSOLE_RATE_LIMIT", "lots"),
    ("FAILED_AUTH_LIMIT", "20/fortnight"),
    ("TRUSTED_PROXIES", "-1"),
    ("TRUSTED_PROXIES", "one"),
    ("TRUSTED_PROXIES", "17"),
]


@pytest.mark.parametrize(("name", "raw"), BAD)
def test_bad_values_fail_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({name: raw})
    assert name in str(excinfo.value)
    assert "expected" in str(excinfo.value) or "must" in str(excinfo.value)


def test_backoff_min_above_max_is_refused() -> None:
    with pytest.raises(SettingsError, match="RETRY_BACKOFF_MIN_MS"):
        load_settings({"RETRY_BACKOFF_MIN_MS": "5000", "RETRY_BACKOFF_MAX_MS": "100"})


def test_empty_values_mean_default() -> None:
    assert load_settings({"MAX_RETRIES": "", "IMAGE_FIELDS": " "}) == Settings()


def test_api_key_and_api_keys_are_merged_without_duplicates() -> None:
    s = load_settings({"API_KEY": "primary-key-1", "API_KEYS": "primary-key-1,next-key-22"})
    assert s.api_keys == ("primary-key-1", "next-key-22")


def test_production_without_key_is_flagged_and_development_is_not() -> None:
    assert load_settings({}).api_key_required_but_missing
    assert not load_settings({"ENVIRONMENT": "development"}).api_key_required_but_missing
    assert not load_settings({"API_KEY": "some-long-key"}).api_key_required_but_missing


def test_settings_are_immutable() -> None:
    with pytest.raises(AttributeError):
        load_settings({}).port = 1  # type: ignore[misc]


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from images_service.config.settings import read_env

    dotenv = tmp_path / ".env"
    dotenv.write_text("MAX_RETRIES=7\nSEARCH_FIELD=title\n")
    monkeypatch.setenv("SEARCH_FIELD", "label")
    s = load_settings(read_env(dotenv))
    assert (s.max_retries, s.search_field) == (7, "label")


def test_to_env_round_trips() -> None:
    s = load_settings({"API_KEYS": "aaaaaaaa1,bbbbbbbb2", "WATCH_NAMESPACES": "x.y,z.*",
                       "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27", "STATUS_FIELD": "",
                       "CONSOLE_RATE_LIMIT": "50/second", "FAILED_AUTH_LIMIT": "5/minute",
                       "TRUSTED_PROXIES": "1"})
    assert load_settings(s.to_env()) == s


def test_every_bad_variable_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"MAX_RETRIES": "lots", "PORT": "70000", "SEARCH_FIELD": "name"})
    message = str(excinfo.value)
    assert "MAX_RETRIES='lots'" in message and "PORT='70000'" in message
    assert excinfo.value.variables == ("MAX_RETRIES", "PORT")


def test_a_bad_backoff_bound_is_reported_as_malformed_not_compared() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"RETRY_BACKOFF_MIN_MS": "soon", "RETRY_BACKOFF_MAX_MS": "100"})
    assert excinfo.value.variables == ("RETRY_BACKOFF_MIN_MS",)
    assert "expected an integer" in str(excinfo.value)


def test_a_bad_uri_is_quoted_without_its_password() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"MONGODB_URI": "http://admin:hunter2-secret@db:27017"})
    assert "hunter2-secret" not in str(excinfo.value)
    assert "http://admin:***@db:27017" in str(excinfo.value)


def test_repr_hides_api_keys_and_uri_passwords() -> None:
    s = load_settings({"API_KEYS": "first-secret-key,second-secret-key",
                       "MONGODB_URI":
                           "mongodb://svc:mongo-pass-1@db1:27017,db2:27017/?replicaSet=rs0",
                       "REDIS_URL": "rediss://:redis-pass-2@cache:6380/1"})
    for text in (repr(s), str(s), f"{s!r}"):
        for secret in ("first-secret-key", "second-secret-key", "mongo-pass-1", "redis-pass-2"):
            assert secret not in text
    assert "api_keys=<2 hidden>" in repr(s)
    assert "mongodb://svc:***@db1:27017,db2:27017/?replicaSet=rs0" in repr(s)
    assert "rediss://:***@cache:6380/1" in repr(s)
    assert "max_retries=5" in repr(s)  # everything else is still shown
