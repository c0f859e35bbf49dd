"""Typed, immutable settings read once from the environment (and an optional `.env`).

The parsers and value types of the variables live in images_service/config/values.py; this
module holds the settings object, the variable table and the loading rules. It is a little
over 300 lines because the settings class, ``to_env`` and the variable table list every
variable once each, side by side, which keeps them checkable against CONTRACT.md §2.

Every process calls :func:`load_settings` at start and passes the result around; nothing
else in the code base reads ``os.environ``. A bad value raises :class:`SettingsError`
naming the variable and the accepted form, so every process fails fast the same way.
The variable names and defaults are those of CONTRACT.md §2; the few extras (ports,
worker sizing, retention) are listed in the README.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping

from images_service import __version__
from images_service.config.values import (  # noqa: F401 -- re-exported names
    COLLECTION_NAME_RE,
    DB_NAME_RE,
    ENVIRONMENTS,
    FIELD_PATH_RE,
    IMAGE_VALIDATION_MODES,
    LOG_LEVELS,
    RATE_LIMIT_RE,
    S3_BUCKET_RE,
    S3_REGION_RE,
    SECRET_ATTR_RE,
    STORAGE_BACKENDS,
    WatchNamespace,
    _bool,
    _choice,
    _csv,
    _db_name,
    _endpoint_url,
    _field_name,
    _field_paths,
    _header_directives,
    _int_parser,
    _namespaces,
    _networks,
    _non_empty,
    _optional_field_name,
    _origins,
    _path,
    _pattern,
    _phashes,
    _port,
    _positive_float,
    _rate_limit,
    _s3_prefix,
    _secret_key,
    _uri,
)
from images_service.processing.specs import (
    VariantSpec,
    VariantSpecError,
    format_variants,
    parse_variants,
)
from images_service.redaction import mask, redact


class SettingsError(ValueError):
    """Configuration values are missing or malformed; the message names every variable.

    ``variables`` lists the names of the bad variables, in the order they were checked.
    """

    def __init__(self, message: str, variables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.variables = variables


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
    # The tree follows its documents (contract §15).
    watch_updates: bool = True
    watch_deletes: bool = True
    trash_retention_days: int = 7
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
    # What an image shows (contract §18): perceptual hash in fast mode, placeholders and
    # near-duplicates.
    perceptual_hash: bool = False
    min_image_side_px: int = 16
    placeholder_hashes: tuple[str, ...] = ()  #: lowercase, 16 hex digits each
    duplicate_distance_bits: int = 4
    # Extras, documented in the README.
    port: int = 8001
    api_workers: int = 2
    worker_processes: int = 2
    worker_threads: int = 8
    worker_metrics_port: int = 9191
    #: Benchmark only (bench/service_bench.py --timeline): each worker process writes what
    #: its threads are doing every 50 ms under this directory (workers/timeline.py); empty: off.
    worker_timeline_dir: str = ""
    listener_metrics_port: int = 9192
    job_retention_days: int = 30
    # Derived images (contract §12).
    processed_variants: tuple[VariantSpec, ...] = ()
    # Web console (contract §13): session lifetime, and the key signing its cookies (empty:
    # derived from the API keys, see api/console/auth.py).
    console_session_hours: int = 8
    console_secret_key: str = ""
    # Integrity (contract §14): pixels decoded or rendered at once per process; 0 means the
    # default, twice MAX_IMAGE_PIXELS (see decode_budget_px).
    decode_budget_pixels: int = 0
    # Freshness (contract §16).
    refresh_after_days: int = 30
    gone_after_misses: int = 3
    gone_min_interval_hours: int = 24
    # Surface hardening (contract §14 "Surface"): the console's own request limit per
    # signed-in session, failed key attempts allowed per client address, and how many
    # reverse proxies sit in front of the api (their X-Forwarded-For entries are trusted).
    console_rate_limit: str = "3000/minute"
    failed_auth_limit: str = "20/minute"
    trusted_proxies: int = 0
    # Politeness toward image hosts (contract §17).
    respect_robots_txt: bool = False
    disallowed_header_directives: tuple[str, ...] = ()
    host_breaker_failures: int = 10

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
    def decode_budget_px(self) -> int:
        """DECODE_BUDGET_PIXELS in effect: never below MAX_IMAGE_PIXELS (any valid image fits)."""
        budget = self.decode_budget_pixels or 2 * self.max_image_pixels
        return max(budget, self.max_image_pixels)

    @property
    def robots_token(self) -> str:
        """The product token of ``USER_AGENT`` (its first word, before any ``/``), the name
        robots.txt groups and scoped X-Robots-Tag directives are matched against (§17)."""
        return self.user_agent.split()[0].split("/", 1)[0].lower()

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
            "WATCH_UPDATES": str(self.watch_updates).lower(),
            "WATCH_DELETES": str(self.watch_deletes).lower(),
            "TRASH_RETENTION_DAYS": str(self.trash_retention_days),
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
            "PERCEPTUAL_HASH": str(self.perceptual_hash).lower(),
            "MIN_IMAGE_SIDE": str(self.min_image_side_px),
            "PLACEHOLDER_HASHES": ",".join(self.placeholder_hashes),
            "DUPLICATE_DISTANCE": str(self.duplicate_distance_bits),
            "PORT": str(self.port),
            "API_WORKERS": str(self.api_workers),
            "WORKER_PROCESSES": str(self.worker_processes),
            "WORKER_THREADS": str(self.worker_threads),
            "WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "WORKER_TIMELINE_DIR": self.worker_timeline_dir,
            "LISTENER_METRICS_PORT": str(self.listener_metrics_port),
            "JOB_RETENTION_DAYS": str(self.job_retention_days),
            "PROCESSED_VARIANTS": format_variants(self.processed_variants),
            "CONSOLE_SESSION_HOURS": str(self.console_session_hours),
            "CONSOLE_SECRET_KEY": self.console_secret_key,
            "DECODE_BUDGET_PIXELS": str(self.decode_budget_pixels or ""),
            "REFRESH_AFTER_DAYS": str(self.refresh_after_days),
            "GONE_AFTER_MISSES": str(self.gone_after_misses),
            "GONE_MIN_INTERVAL_HOURS": str(self.gone_min_interval_hours),
            "CONSOLE_RATE_LIMIT": self.console_rate_limit,
            "FAILED_AUTH_LIMIT": self.failed_auth_limit,
            "TRUSTED_PROXIES": str(self.trusted_proxies),
            "RESPECT_ROBOTS_TXT": str(self.respect_robots_txt).lower(),
            "DISALLOWED_HEADER_DIRECTIVES": ",".join(self.disallowed_header_directives),
            "HOST_BREAKER_FAILURES": str(self.host_breaker_failures),
        }


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
    "WATCH_UPDATES": ("watch_updates", _bool),
    "WATCH_DELETES": ("watch_deletes", _bool),
    "TRASH_RETENTION_DAYS": ("trash_retention_days", _int_parser(0, 36500)),
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
    "PERCEPTUAL_HASH": ("perceptual_hash", _bool),
    "MIN_IMAGE_SIDE": ("min_image_side_px", _int_parser(0, 10_000)),
    "PLACEHOLDER_HASHES": ("placeholder_hashes", _phashes),
    "DUPLICATE_DISTANCE": ("duplicate_distance_bits", _int_parser(0, 64)),
    "PORT": ("port", _port),
    "API_WORKERS": ("api_workers", _int_parser(1, 64)),
    "WORKER_PROCESSES": ("worker_processes", _int_parser(1, 64)),
    "WORKER_THREADS": ("worker_threads", _int_parser(1, 512)),
    "WORKER_TIMELINE_DIR": ("worker_timeline_dir", _non_empty),
    "WORKER_METRICS_PORT": ("worker_metrics_port", _port),
    "LISTENER_METRICS_PORT": ("listener_metrics_port", _port),
    "JOB_RETENTION_DAYS": ("job_retention_days", _int_parser(1, 3650)),
    "CONSOLE_SESSION_HOURS": ("console_session_hours", _int_parser(1, 720)),
    "CONSOLE_SECRET_KEY": ("console_secret_key", _secret_key),
    "DECODE_BUDGET_PIXELS": ("decode_budget_pixels", _int_parser(1)),
    "REFRESH_AFTER_DAYS": ("refresh_after_days", _int_parser(0, 36500)),
    "GONE_AFTER_MISSES": ("gone_after_misses", _int_parser(1, 1000)),
    "GONE_MIN_INTERVAL_HOURS": ("gone_min_interval_hours", _int_parser(0, 87600)),
    "CONSOLE_RATE_LIMIT": ("console_rate_limit", _rate_limit),
    "FAILED_AUTH_LIMIT": ("failed_auth_limit", _rate_limit),
    "TRUSTED_PROXIES": ("trusted_proxies", _int_parser(0, 16)),
    "RESPECT_ROBOTS_TXT": ("respect_robots_txt", _bool),
    "DISALLOWED_HEADER_DIRECTIVES": ("disallowed_header_directives", _header_directives),
    "HOST_BREAKER_FAILURES": ("host_breaker_failures", _int_parser(1, 10_000)),
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
