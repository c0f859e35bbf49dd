"""Typed, immutable settings read once from the environment (and an optional `.env`).

Every process calls :func:`load_settings` at start and passes the result around; nothing
else in the code base reads ``os.environ``. A bad value raises :class:`SettingsError`
naming the variable and the accepted form, so every process fails fast the same way.
The variable names and defaults are those of CONTRACT.md §2; the few extras (ports,
worker sizing, retention) are listed in the README.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from images_service import __version__
from images_service.processing.specs import (
    VariantSpec,
    VariantSpecError,
    format_variants,
    parse_variants,
)
from images_service.redaction import mask, redact

T = TypeVar("T")

#: Names MongoDB accepts for a database and that are safe as one path segment.
DB_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
#: Collection names: what MongoDB allows minus anything unsafe in a path segment.
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,119}$")
#: A dotted field path such as ``media.gallery``.
FIELD_PATH_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
#: ``600/minute``, ``10 per second``, ``100/hour``: the forms flask-limiter parses.
RATE_LIMIT_RE = re.compile(r"^\s*\d+\s*(/|\s+per\s+)\s*(\d+\s+)?(second|minute|hour|day)s?\s*$")

#: Bucket names: AWS's rules, loosened for the legacy names other S3 servers accept.
S3_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
#: ``us-east-1``, and what S3-compatible servers use (``auto`` for R2, ``garage``…).
S3_REGION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STORAGE_BACKENDS = ("filesystem", "s3")
#: ``IMAGE_VALIDATION``: one full decode per image, or structural checks only (contract §8).
IMAGE_VALIDATION_MODES = ("full", "fast")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENVIRONMENTS = ("development", "production")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


#: Settings attributes whose values are secrets: never shown, only counted (see __repr__).
#: A name match, so a secret added later (``s3_secret_access_key``) is hidden by default.
SECRET_ATTR_RE = re.compile(r"(key|secret|password|token)", re.I)


class SettingsError(ValueError):
    """Configuration values are missing or malformed; the message names every variable.

    ``variables`` lists the names of the bad variables, in the order they were checked.
    """

    def __init__(self, message: str, variables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.variables = variables


@dataclass(frozen=True)
class WatchNamespace:
    """One entry of ``WATCH_NAMESPACES``: a database and a collection or ``*``."""

    database: str
    collection: str  # "*" means every collection of the database

    def matches(self, database: str, collection: str) -> bool:
        return self.database == database and self.collection in ("*", collection)

    def __str__(self) -> str:
        return f"{self.database}.{self.collection}"


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the service can be configured with (contract §2 plus documented extras).

    The repr hides secrets (API keys, passwords in URIs), so a settings object that ends up
    in a log line, a traceback or a debugger print leaks nothing.
    """

    api_keys: tuple[str, ...] = ()
    mongodb_uri: str = "mongodb://127.0.0.1:27017"
    redis_url: str = "redis://127.0.0.1:6379/0"
    storage_path: Path = Path("./data/images")
    max_concurrent_downloads: int = 20
    max_concurrent_per_domain: int = 4
    download_timeout_s: float = 15.0
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 89_478_485
    max_retries: int = 5
    retry_backoff_min_ms: int = 1000
    retry_backoff_max_ms: int = 300_000
    image_fields: tuple[str, ...] = ("images",)
    search_field: str = "name"
    download_flag_field: str = "download_images"
    status_field: str = "images_download"
    watch_namespaces: tuple[WatchNamespace, ...] = (WatchNamespace("serpy_db", "*"),)
    watch_inserts: bool = True
    jobs_database: str = "images_service"
    allow_private_networks: bool = False
    private_network_allowlist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    user_agent: str = f"serpy-images/{__version__}"
    cors_origins: tuple[str, ...] = ()
    api_rate_limit: str = "600/minute"
    environment: str = "production"
    log_level: str = "INFO"
    # Storage backends (contract §11).
    storage_backend: str = "filesystem"
    s3_bucket: str = ""
    s3_prefix: str = ""  #: empty, or ending in "/" (normalised)
    s3_endpoint_url: str = ""  #: empty means AWS S3
    s3_region: str = "us-east-1"
    # Validation of downloaded images (contract §8): "full" decodes, "fast" checks structure.
    image_validation: str = "full"
    # Extras, documented in the README.
    port: int = 8001
    api_workers: int = 2
    worker_processes: int = 2
    worker_threads: int = 8
    worker_metrics_port: int = 9191
    listener_metrics_port: int = 9192
    job_retention_days: int = 30
    # Derived images (contract §12).
    processed_variants: tuple[VariantSpec, ...] = ()
    # Web console (contract §13): session lifetime, and the key signing its cookies (empty:
    # derived from the API keys, see api/console/auth.py).
    console_session_hours: int = 8
    console_secret_key: str = ""

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if SECRET_ATTR_RE.search(f.name):
                text = mask(value if isinstance(value, (tuple, list)) else (value,) * bool(value))
            elif isinstance(value, str):
                text = repr(redact(value))
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def api_key_required_but_missing(self) -> bool:
        """The api refuses to start in production without a key (contract §2)."""
        return not self.api_keys and not self.is_development

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, to hand to a child process."""
        return {
            "API_KEYS": ",".join(self.api_keys),
            "MONGODB_URI": self.mongodb_uri,
            "REDIS_URL": self.redis_url,
            "STORAGE_PATH": str(self.storage_path),
            "MAX_CONCURRENT_DOWNLOADS": str(self.max_concurrent_downloads),
            "MAX_CONCURRENT_PER_DOMAIN": str(self.max_concurrent_per_domain),
            "DOWNLOAD_TIMEOUT": str(self.download_timeout_s),
            "MAX_IMAGE_BYTES": str(self.max_image_bytes),
            "MAX_IMAGE_PIXELS": str(self.max_image_pixels),
            "MAX_RETRIES": str(self.max_retries),
            "RETRY_BACKOFF_MIN_MS": str(self.retry_backoff_min_ms),
            "RETRY_BACKOFF_MAX_MS": str(self.retry_backoff_max_ms),
            "IMAGE_FIELDS": ",".join(self.image_fields),
            "SEARCH_FIELD": self.search_field,
            "DOWNLOAD_FLAG_FIELD": self.download_flag_field,
            "STATUS_FIELD": self.status_field,
            "WATCH_NAMESPACES": ",".join(str(ns) for ns in self.watch_namespaces),
            "WATCH_INSERTS": str(self.watch_inserts).lower(),
            "JOBS_DATABASE": self.jobs_database,
            "ALLOW_PRIVATE_NETWORKS": str(self.allow_private_networks).lower(),
            "PRIVATE_NETWORK_ALLOWLIST": ",".join(str(n) for n in self.private_network_allowlist),
            "USER_AGENT": self.user_agent,
            "CORS_ORIGINS": ",".join(self.cors_origins),
            "API_RATE_LIMIT": self.api_rate_limit,
            "ENVIRONMENT": self.environment,
            "LOG_LEVEL": self.log_level,
            "STORAGE_BACKEND": self.storage_backend,
            "S3_BUCKET": self.s3_bucket,
            "S3_PREFIX": self.s3_prefix,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_REGION": self.s3_region,
            "IMAGE_VALIDATION": self.image_validation,
            "PORT": str(self.port),
            "API_WORKERS": str(self.api_workers),
            "WORKER_PROCESSES": str(self.worker_processes),
            "WORKER_THREADS": str(self.worker_threads),
            "WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "LISTENER_METRICS_PORT": str(self.listener_metrics_port),
            "JOB_RETENTION_DAYS": str(self.job_retention_days),
            "PROCESSED_VARIANTS": format_variants(self.processed_variants),
            "CONSOLE_SESSION_HOURS": str(self.console_session_hours),
            "CONSOLE_SECRET_KEY": self.console_secret_key,
        }


# --- parsers: each takes the raw string and returns the value or raises ValueError ---------


def _int_parser(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
        return value

    parse.form = (  # type: ignore[attr-defined]
        f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    )
    return parse


def _positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError
    return value


_positive_float.form = "a number of seconds > 0"  # type: ignore[attr-defined]


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError


_bool.form = "true or false"  # type: ignore[attr-defined]


def _csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _field_paths(raw: str) -> tuple[str, ...]:
    paths = tuple(_csv(raw))
    if not paths or not all(FIELD_PATH_RE.match(p) for p in paths):
        raise ValueError
    return paths


_field_paths.form = "comma-separated dotted field paths, e.g. images,media.gallery"  # type: ignore[attr-defined]


def _field_name(raw: str) -> str:
    value = raw.strip()
    if not FIELD_PATH_RE.match(value):
        raise ValueError
    return value


_field_name.form = "a field name (letters, digits, _ and -, dotted paths allowed)"  # type: ignore[attr-defined]


def _optional_field_name(raw: str) -> str:
    return _field_name(raw) if raw.strip() else ""


_optional_field_name.form = "a field name, or empty to disable"  # type: ignore[attr-defined]


def _namespaces(raw: str) -> tuple[WatchNamespace, ...]:
    result = []
    for part in _csv(raw):
        database, sep, collection = part.partition(".")
        if not sep or not DB_NAME_RE.match(database):
            raise ValueError
        if collection != "*" and not COLLECTION_NAME_RE.match(collection):
            raise ValueError
        result.append(WatchNamespace(database, collection))
    return tuple(result)


_namespaces.form = "comma-separated db.collection or db.* entries"  # type: ignore[attr-defined]


def _db_name(raw: str) -> str:
    value = raw.strip()
    if not DB_NAME_RE.match(value):
        raise ValueError
    return value


_db_name.form = "a database name (letters, digits, _ and -)"  # type: ignore[attr-defined]


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part, strict=False) for part in _csv(raw))


_networks.form = "comma-separated CIDRs, e.g. 127.0.0.0/8,10.20.0.0/16"  # type: ignore[attr-defined]


def _uri(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not value.startswith(tuple(f"{s}://" for s in schemes)) or len(value) <= 10:
            raise ValueError
        return value

    parse.form = " or ".join(f"a {s}:// URL" for s in schemes)  # type: ignore[attr-defined]
    return parse


def _non_empty(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError
    return value


_non_empty.form = "a non-empty string"  # type: ignore[attr-defined]


def _path(raw: str) -> Path:
    return Path(_non_empty(raw))


_path.form = "a directory path"  # type: ignore[attr-defined]


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(_csv(raw))
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ValueError
    return origins


_origins.form = "comma-separated origins such as https://app.example.com, or *"  # type: ignore[attr-defined]


def _rate_limit(raw: str) -> str:
    value = raw.strip()
    if not RATE_LIMIT_RE.match(value):
        raise ValueError
    return value


_rate_limit.form = "a limit such as 600/minute (second, minute, hour or day)"  # type: ignore[attr-defined]


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in options:
            raise ValueError
        return value

    parse.form = "one of " + ", ".join(options)  # type: ignore[attr-defined]
    return parse


def _pattern(regex: re.Pattern[str], form: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not regex.match(value):
            raise ValueError
        return value

    parse.form = form  # type: ignore[attr-defined]
    return parse


def _s3_prefix(raw: str) -> str:
    """``images`` and ``/images/`` become ``images/``; segments are checked like keys."""
    value = raw.strip().strip("/")
    if not value:
        return ""
    for segment in value.split("/"):
        if not segment or segment in (".", "..") or "\\" in segment or any(
            ord(ch) < 0x20 or ord(ch) == 0x7F for ch in segment
        ):
            raise ValueError
    return value + "/"


_s3_prefix.form = "a key prefix such as images/ (no empty, . or .. segments)"  # type: ignore[attr-defined]


def _endpoint_url(raw: str) -> str:
    value = _uri(("http", "https"))(raw).rstrip("/")
    # Credentials come only from the AWS chain: a user:password@ in the URL is refused.
    if "@" in value.split("://", 1)[1].split("/", 1)[0]:
        raise ValueError
    return value


_endpoint_url.form = "an http:// or https:// URL without credentials, or empty for AWS S3"  # type: ignore[attr-defined]


def _port(raw: str) -> int:
    return _int_parser(1, 65535)(raw)


_port.form = "a TCP port from 1 to 65535"  # type: ignore[attr-defined]


def _secret_key(raw: str) -> str:
    # Never quoted in messages: SettingsError shows the value, so the check is on length only
    # and a bad key is reported by the caller without it (see load_settings).
    if len(raw) < 32 or any(c.isspace() for c in raw):
        raise ValueError("too short")
    return raw


_secret_key.form = "at least 32 characters without spaces"  # type: ignore[attr-defined]


#: variable name -> (Settings attribute, parser)
_SPEC: dict[str, tuple[str, Callable[[str], object]]] = {
    "MONGODB_URI": ("mongodb_uri", _uri(("mongodb", "mongodb+srv"))),
    "REDIS_URL": ("redis_url", _uri(("redis", "rediss", "unix"))),
    "STORAGE_PATH": ("storage_path", _path),
    "MAX_CONCURRENT_DOWNLOADS": ("max_concurrent_downloads", _int_parser(1, 10_000)),
    "MAX_CONCURRENT_PER_DOMAIN": ("max_concurrent_per_domain", _int_parser(1, 10_000)),
    "DOWNLOAD_TIMEOUT": ("download_timeout_s", _positive_float),
    "MAX_IMAGE_BYTES": ("max_image_bytes", _int_parser(1)),
    "MAX_IMAGE_PIXELS": ("max_image_pixels", _int_parser(1)),
    "MAX_RETRIES": ("max_retries", _int_parser(0, 100)),
    "RETRY_BACKOFF_MIN_MS": ("retry_backoff_min_ms", _int_parser(0)),
    "RETRY_BACKOFF_MAX_MS": ("retry_backoff_max_ms", _int_parser(0)),
    "IMAGE_FIELDS": ("image_fields", _field_paths),
    "SEARCH_FIELD": ("search_field", _field_name),
    "DOWNLOAD_FLAG_FIELD": ("download_flag_field", _field_name),
    "STATUS_FIELD": ("status_field", _optional_field_name),
    "WATCH_NAMESPACES": ("watch_namespaces", _namespaces),
    "WATCH_INSERTS": ("watch_inserts", _bool),
    "JOBS_DATABASE": ("jobs_database", _db_name),
    "ALLOW_PRIVATE_NETWORKS": ("allow_private_networks", _bool),
    "PRIVATE_NETWORK_ALLOWLIST": ("private_network_allowlist", _networks),
    "USER_AGENT": ("user_agent", _non_empty),
    "CORS_ORIGINS": ("cors_origins", _origins),
    "API_RATE_LIMIT": ("api_rate_limit", _rate_limit),
    "ENVIRONMENT": ("environment", _choice(ENVIRONMENTS)),
    "LOG_LEVEL": ("log_level", _choice(LOG_LEVELS, upper=True)),
    "STORAGE_BACKEND": ("storage_backend", _choice(STORAGE_BACKENDS)),
    "S3_BUCKET": ("s3_bucket", _pattern(S3_BUCKET_RE, "a bucket name (3-255 of a-z 0-9 . _ -)")),
    "S3_PREFIX": ("s3_prefix", _s3_prefix),
    "S3_ENDPOINT_URL": ("s3_endpoint_url", _endpoint_url),
    "S3_REGION": ("s3_region", _pattern(S3_REGION_RE, "a region name such as us-east-1")),
    "IMAGE_VALIDATION": ("image_validation", _choice(IMAGE_VALIDATION_MODES)),
    "PORT": ("port", _port),
    "API_WORKERS": ("api_workers", _int_parser(1, 64)),
    "WORKER_PROCESSES": ("worker_processes", _int_parser(1, 64)),
    "WORKER_THREADS": ("worker_threads", _int_parser(1, 512)),
    "WORKER_METRICS_PORT": ("worker_metrics_port", _port),
    "LISTENER_METRICS_PORT": ("listener_metrics_port", _port),
    "JOB_RETENTION_DAYS": ("job_retention_days", _int_parser(1, 3650)),
    "CONSOLE_SESSION_HOURS": ("console_session_hours", _int_parser(1, 720)),
    "CONSOLE_SECRET_KEY": ("console_secret_key", _secret_key),
}

#: Every variable the service reads, for docs and tests.
VARIABLES = ("API_KEY", "API_KEYS", *_SPEC, "PROCESSED_VARIANTS")


def _api_keys(env: Mapping[str, str], problems: dict[str, str]) -> tuple[str, ...]:
    """The accepted keys; a malformed one is reported in ``problems`` (never quoted)."""
    keys: list[str] = []
    for name in ("API_KEY", "API_KEYS"):
        for key in _csv(env.get(name, "")):
            if len(key) < 8 or any(c.isspace() for c in key):
                problems[name] = f"{name}: each key must be at least 8 characters without spaces"
            elif key not in keys:
                keys.append(key)
    return tuple(keys)


def _processed_variants(env: Mapping[str, str],
                        problems: dict[str, str]) -> tuple[VariantSpec, ...]:
    """``PROCESSED_VARIANTS``: its parser names the bad entry and part, kept in the message
    (reported in ``problems``)."""
    raw = env.get("PROCESSED_VARIANTS", "")
    try:
        return parse_variants(raw)
    except VariantSpecError as e:
        problems["PROCESSED_VARIANTS"] = (
            f"PROCESSED_VARIANTS is invalid: {e}; expected comma-separated "
            "NAME:WIDTHxHEIGHT:MODE:FORMAT[:QUALITY], e.g. thumb:320x320:fit:webp:80"
        )
        return ()


def read_env(dotenv_path: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """The process environment over the optional `.env` file (the environment wins)."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ)
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate :class:`Settings` from ``env`` (default: environment + `.env`).

    Empty values mean "use the default", except ``STATUS_FIELD`` where empty disables
    write-back, and the list variables where empty means an empty list. Every variable is
    checked before failing, so one :class:`SettingsError` names all the bad ones at once
    (fixing a deployment one restart per variable is slow). Values are quoted in the message
    with any URI password redacted; API keys are never quoted.
    """
    env = read_env() if env is None else env
    problems: dict[str, str] = {}
    values: dict[str, object] = {
        "api_keys": _api_keys(env, problems),
        "processed_variants": _processed_variants(env, problems),
    }
    for name, (attr, parse) in _SPEC.items():
        raw = env.get(name)
        if raw is None:
            continue
        if not raw.strip() and name not in (
            "STATUS_FIELD",
            "PRIVATE_NETWORK_ALLOWLIST",
            "CORS_ORIGINS",
        ):
            continue
        try:
            values[attr] = parse(raw)
        except (ValueError, TypeError):
            form = getattr(parse, "form", "a valid value")
            if SECRET_ATTR_RE.search(attr):  # a secret is never quoted, not even a bad one
                problems[name] = f"{name} is invalid: expected {form}"
                continue
            shown = redact(raw, hide_user=name == "S3_ENDPOINT_URL")
            problems[name] = f"{name}={shown!r} is invalid: expected {form}"
    low = values.get("retry_backoff_min_ms", Settings.retry_backoff_min_ms)
    high = values.get("retry_backoff_max_ms", Settings.retry_backoff_max_ms)
    # Compared only when both are well-formed: a bad one is already reported.
    backoff_parsed = not {"RETRY_BACKOFF_MIN_MS", "RETRY_BACKOFF_MAX_MS"} & problems.keys()
    if backoff_parsed and low > high:  # type: ignore[operator]
        problems["RETRY_BACKOFF_MIN_MS"] = (
            f"RETRY_BACKOFF_MIN_MS must not be greater than RETRY_BACKOFF_MAX_MS ({low} > {high})"
        )
    backend = values.get("storage_backend", Settings.storage_backend)
    if (backend == "s3" and not values.get("s3_bucket")
            and not {"STORAGE_BACKEND", "S3_BUCKET"} & problems.keys()):
        problems["S3_BUCKET"] = "S3_BUCKET is required when STORAGE_BACKEND=s3"
    if problems:
        raise SettingsError("; ".join(problems.values()), tuple(problems))
    return Settings(**values)  # type: ignore[arg-type]
