"""A seeded, deterministic corpus of hostile image files (issue 17, contract §14).

``corpus(count, seed)`` returns ``count`` files: first every base image of
:mod:`tests.support.fuzz_bases` unmutated (they must validate, with every variant made: a
check of the harness itself), then the issue's reproducer (a JFIF JPEG with a DPI and a
garbage ``Exif`` APP1 segment, which made ``getexif()`` raise ``SyntaxError``), then
mutated files: the bases taken in turn, each given a format mutation (55 %) or a generic one
(:mod:`tests.support.fuzz_mutations`), and one more generic mutation on top 15 % of the time.

File ``i`` depends only on ``i`` and the seed (its own ``random.Random(f"{seed}/{i}")``), never
on ``count``: a smaller corpus is a prefix of a larger one, so a file the CI run reports is the
same file in the long run. Same seed and Pillow version, same bytes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.fuzz_bases import BASES, base, base_format
from tests.support.fuzz_mutations import BY_FORMAT, GENERIC

DEFAULT_SEED = 17
#: The corpus size of the issue's minimum (the long run; CI runs a prefix).
LONG_RUN_FILES = 2000
#: Content-Type a server would send for each format (the service ignores it: bytes decide).
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                 "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff",
                 "AVIF": "image/avif"}
_FORMAT_SHARE = 0.55
_SECOND_SHARE = 0.15


@dataclass(frozen=True)
class FuzzFile:
    """One corpus file: which base it came from and how it was changed."""

    index: int
    base: str
    format: str  #: the base's format (the file may no longer be one)
    mutation: str  #: ``none``, ``issue17``, a mutation's name, or two joined by ``+``
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.index:05d}-{self.base}-{self.mutation}"

    @property
    def extension(self) -> str:
        return {"JPEG": ".jpg", "TIFF": ".tif"}.get(self.format, f".{self.format.lower()}")


def issue17_jpeg() -> bytes:
    """The issue's file: JFIF with a DPI, then an APP1 of ``Exif\\0\\0`` and garbage."""
    data = base("jpeg-jfif-dpi")
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]
    payload = b"Exif\0\0" + b"garbage!" * 4
    return (data[:app0_end] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
            + data[app0_end:])


def fuzz_file(index: int, seed: int = DEFAULT_SEED) -> FuzzFile:
    """File ``index`` of the corpus of ``seed``."""
    names = list(BASES)
    if index < len(names):
        name = names[index]
        return FuzzFile(index, name, base_format(name), "none", base(name))
    if index == len(names):
        return FuzzFile(index, "jpeg-jfif-dpi", "JPEG", "issue17", issue17_jpeg())
    rng = random.Random(f"{seed}/{index}")
    name = names[index % len(names)]
    image_format = base_format(name)
    own = BY_FORMAT.get(image_format, {})
    pool = own if own and rng.random() < _FORMAT_SHARE else GENERIC
    label = rng.choice(sorted(pool))
    data = pool[label](rng, base(name))
    if rng.random() < _SECOND_SHARE and data:
        second = rng.choice(sorted(GENERIC))
        data, label = GENERIC[second](rng, data), f"{label}+{second}"
    return FuzzFile(index, name, image_format, label, data or b"\0")


def corpus(count: int, seed: int = DEFAULT_SEED) -> Iterator[FuzzFile]:
    """The first ``count`` files of the corpus of ``seed`` (made one at a time)."""
    return (fuzz_file(index, seed) for index in range(count))


def write_corpus(folder: Path, count: int, seed: int = DEFAULT_SEED
                 ) -> list[tuple[FuzzFile, Path]]:
    """Write the first ``count`` files under ``folder``; returns each file and its path."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for item in corpus(count, seed):
        path = folder / f"{item.name}{item.extension}"
        path.write_bytes(item.data)
        written.append((item, path))
    return written
