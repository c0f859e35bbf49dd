"""The redaction helper: passwords in URIs (bare or inside a message) become ``***``."""

from __future__ import annotations

import pytest

from images_service.redaction import mask, redact


@pytest.mark.parametrize(("raw", "shown"), [
    ("mongodb://user:pass@host", "mongodb://user:***@host"),
    ("mongodb+srv://app:p%40ss@cluster0.example.net/db?retryWrites=true",
     "mongodb+srv://app:***@cluster0.example.net/db?retryWrites=true"),
    ("mongodb://u:p@ss@h1:1,h2:2/?replicaSet=rs", "mongodb://u:***@h1:1,h2:2/?replicaSet=rs"),
    ("redis://:pass@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://default:pw@cache:6380/2", "rediss://default:***@cache:6380/2"),
    ("unix:///run/redis.sock?password=pw&db=1", "unix:///run/redis.sock?password=***&db=1"),
    ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
    ("redis://user:@host/0", "redis://user:@host/0"),
    ("connect redis://:a1@h:1/0 failed; also mongodb://x:b2@c",
     "connect redis://:***@h:1/0 failed; also mongodb://x:***@c"),
])
def test_passwords_are_replaced_and_the_rest_is_kept(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_secrets_are_counted_never_shown() -> None:
    assert mask(("key-one-111", "key-two-222")) == "<2 hidden>"
    assert mask(()) == "<none>"
