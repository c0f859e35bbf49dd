"""Value types and parsers of the settings variables (images_service.config.settings reads them).

Each parser takes the raw string of one variable and returns its typed value or raises
ValueError; its ``form`` attribute says what is accepted, for the error message. The name
patterns are shared with the API's validation of request parameters.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

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
#: A perceptual hash as metadata.json records it (contract §18): 16 hex digits.
PHASH_RE = re.compile(r"^[0-9a-fA-F]{16}$")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENVIRONMENTS = ("development", "production")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


#: Settings attributes whose values are secrets: never shown, only counted (see __repr__).
#: A name match, so a secret added later (``s3_secret_access_key``) is hidden by default.
SECRET_ATTR_RE = re.compile(r"(key|secret|password|token)", re.I)


@dataclass(frozen=True)
class WatchNamespace:
    """One entry of ``WATCH_NAMESPACES``: a database and a collection or ``*``."""

    database: str
    collection: str  # "*" means every collection of the database

    def matches(self, database: str, collection: str) -> bool:
        return self.database == database and self.collection in ("*", collection)

    def __str__(self) -> str:
        return f"{self.database}.{self.collection}"


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


#: One X-Robots-Tag directive name, e.g. ``noai`` or ``noimageai`` (contract §17).
HEADER_DIRECTIVE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _header_directives(raw: str) -> tuple[str, ...]:
    """``DISALLOWED_HEADER_DIRECTIVES``: comma-separated directive names, lower-cased."""
    names = tuple(dict.fromkeys(part.lower() for part in _csv(raw)))
    if not all(HEADER_DIRECTIVE_RE.match(name) for name in names):
        raise ValueError
    return names


_header_directives.form = (  # type: ignore[attr-defined]
    "comma-separated X-Robots-Tag directive names such as noai,noimageai"
)


def _field_paths(raw: str) -> tuple[str, ...]:
    paths = tuple(_csv(raw))
    if not paths or not all(FIELD_PATH_RE.match(p) for p in paths):
        raise ValueError
    return paths


_field_paths.form = "comma-separated dotted field paths, e.g. images,media.gallery"  # type: ignore[attr-defined]




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




def _phashes(raw: str) -> tuple[str, ...]:
    """``PLACEHOLDER_HASHES``: comma-separated 16-hex-digit hashes, lowercased, no repeats."""
    hashes: list[str] = []
    for part in _csv(raw):
        if not PHASH_RE.match(part):
            raise ValueError
        if part.lower() not in hashes:
            hashes.append(part.lower())
    return tuple(hashes)


_phashes.form = "comma-separated perceptual hashes of 16 hex digits, e.g. 8f373714acfcf4d0"  # type: ignore[attr-defined]


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


_field_name = _pattern(FIELD_PATH_RE, "a field name (letters, digits, _ and -, dotted paths allowed)")
_rate_limit = _pattern(RATE_LIMIT_RE, "a limit such as 600/minute (second, minute, hour or day)")


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
