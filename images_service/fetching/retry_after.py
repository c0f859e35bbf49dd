"""Parse the ``Retry-After`` response header (RFC 9110 §10.2.3) into seconds.

The header is either a number of seconds or an HTTP date. The actors honour it, capped at
``RETRY_BACKOFF_MAX_MS`` (contract §8); capping is their business, parsing is ours.
"""

from __future__ import annotations

import time
from datetime import timezone
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait (>= 0) from a Retry-After value, or None when absent or malformed.

    ``now_s`` is the current Unix time (defaults to :func:`time.time`), used for dates; a
    date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        # RFC 9110 dates are always GMT; parsedate returns naive for "-0000".
        moment = moment.replace(tzinfo=timezone.utc)
    now = time.time() if now_s is None else now_s
    return max(0.0, moment.timestamp() - now)
