"""Retry-After parsing: seconds or an HTTP date, as seconds >= 0."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from images_service.fetching.retry_after import parse_retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 0 ", 0.0), (None, None), ("", None), ("soon", None), ("-5", None),
     ("1.5", None)],
)
def test_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_s=NOW) == expected


def test_http_dates() -> None:
    assert parse_retry_after(formatdate(NOW + 90, usegmt=True), now_s=NOW) == pytest.approx(90)
    assert parse_retry_after(formatdate(NOW - 90, usegmt=True), now_s=NOW) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=NOW) == 0.0
