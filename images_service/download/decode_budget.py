"""A per-process pixel budget for decoding and rendering images (contract §14, memory).

Decoding an image needs memory in proportion to its pixels, not to its bytes: a 10 KB PNG can
declare 9400×9400 pixels (a palette image: 88 MB decoded, and each conversion to RGB(A) for a
variant several times that). ``MAX_IMAGE_PIXELS`` bounds one image; with dozens of download
threads per process it does not bound the process. So every decode and render first takes its
pixels from the process's budget (``DECODE_BUDGET_PIXELS``, default twice
``MAX_IMAGE_PIXELS``) and waits while the budget is spent; an image that will also be rendered
into variants (a conversion to RGB(A) and resampling buffers) counts twice. Small images (the
usual case) never wait.

After a large decode, the freed pixel buffers are handed back to the system
(``malloc_trim``): glibc keeps freed memory in the arena of the thread that used it, so a
process whose 64 threads each decoded one large image once would otherwise keep them all.

The budget is one per process and per size (a module-level registry, like the process-local
folder locks): every thread of the process shares it, whichever object asks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

logger = logging.getLogger(__name__)

#: Decodes of at least this many pixels give their memory back to the system when done.
TRIM_AFTER_PIXELS = 4_000_000
#: Formats whose header is read to size a decode (the contract's; no other plugin runs).
HEADER_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "MPO")

_budgets: dict[int, DecodeBudget] = {}
_registry_lock = threading.Lock()


def _malloc_trim() -> None:
    if _libc is not None:
        try:
            _libc.malloc_trim(0)
        except (AttributeError, OSError):  # not glibc
            pass


_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name) if _libc_name else None


class DecodeBudget:
    """A counting semaphore of pixels; :meth:`hold` takes some for the time of a decode."""

    def __init__(self, capacity_px: int) -> None:
        self.capacity_px = capacity_px
        self.available_px = capacity_px
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until ``pixels`` (at most the whole budget) are free, hold them, give them back."""
        wanted = max(0, min(int(pixels), self.capacity_px))
        with self._cond:
            while self.available_px < wanted:
                self._cond.wait()
            self.available_px -= wanted
        try:
            yield
        finally:
            with self._cond:
                self.available_px += wanted
                self._cond.notify_all()
            if wanted >= TRIM_AFTER_PIXELS:
                _malloc_trim()


def budget_for(capacity_px: int) -> DecodeBudget:
    """This process's budget of ``capacity_px`` pixels (one shared instance per size)."""
    with _registry_lock:
        budget = _budgets.get(capacity_px)
        if budget is None:
            budget = _budgets[capacity_px] = DecodeBudget(capacity_px)
        return budget


def header_pixels(path: object) -> int:
    """Width × height declared by an image file's header (0 when none can be read: the
    validation that follows reports why, and decodes nothing)."""
    try:
        with Image.open(path, formats=HEADER_FORMATS) as image:  # type: ignore[arg-type]
            width, height = image.size
    except Exception:  # noqa: BLE001 -- any unreadable header: validation will say what it is
        return 0
    return max(0, int(width)) * max(0, int(height))
