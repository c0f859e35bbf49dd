"""``PROCESSED_VARIANTS``: the grammar of a derived image's spec (CONTRACT.md §12).

``NAME:WIDTHxHEIGHT:MODE:FORMAT[:QUALITY]``, comma-separated, e.g.
``thumb:320x320:fit:webp:80,card:640x360:cover:jpeg``. Each entry becomes a frozen
:class:`VariantSpec`; its :attr:`VariantSpec.spec` is the *canonical* string recorded in
metadata.json (the role of Wagtail's rendition filter spec): a re-download compares it with the
recorded one and re-renders the variant when they differ.

Canonical form: ``WIDTHxHEIGHT:MODE:FORMAT:QUALITY`` with the quality always written (the
default 85 included), so ``thumb:320x320:fit:webp`` and ``thumb:320x320:fit:webp:85`` are the
same spec. Formats that ignore quality (png) write no quality (``320x320:fit:png``): changing
a number that has no effect must not re-render every png variant. MODE and FORMAT are
accepted in any case and written lower-case; they are checked against the registries of
:mod:`~images_service.processing.modes` and :mod:`~images_service.processing.encoders`, so a
new mode or format needs no change here.

This module imports nothing of the settings: :mod:`images_service.config.settings` imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from images_service.processing.encoders import ENCODERS, Encoder
from images_service.processing.modes import MODES, ResizeMode

#: Variant names: they become a folder name under ``processed/``.
NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
_SIZE_RE = re.compile(r"^([0-9]{1,6})x([0-9]{1,6})$")
#: Largest box side accepted, in pixels: a bigger "derived" image is a configuration mistake.
MAX_SIDE_PX = 10_000
DEFAULT_QUALITY = 85
QUALITY_RANGE = (1, 100)


class VariantSpecError(ValueError):
    """One entry of ``PROCESSED_VARIANTS`` is malformed; the message names the bad part."""


@dataclass(frozen=True)
class VariantSpec:
    """One configured derived image: where it goes (``name``) and how it is made."""

    name: str
    width_px: int
    height_px: int
    mode: str  #: a key of :data:`~images_service.processing.modes.MODES`
    format: str  #: a key of :data:`~images_service.processing.encoders.ENCODERS`
    quality: int  #: 1-100; kept as given even when the encoder ignores it

    @property
    def spec(self) -> str:
        """The canonical spec string recorded in metadata.json, e.g. ``320x320:fit:webp:80``."""
        base = f"{self.width_px}x{self.height_px}:{self.mode}:{self.format}"
        return f"{base}:{self.quality}" if self.encoder.uses_quality else base

    @property
    def encoder(self) -> Encoder:
        return ENCODERS[self.format]

    @property
    def resize_mode(self) -> ResizeMode:
        return MODES[self.mode]

    def __str__(self) -> str:
        return f"{self.name}:{self.spec}"


def parse_variant(entry: str) -> VariantSpec:
    """Parse one ``NAME:WIDTHxHEIGHT:MODE:FORMAT[:QUALITY]``; raise VariantSpecError."""
    parts = [part.strip() for part in entry.strip().split(":")]
    if len(parts) not in (4, 5):
        raise VariantSpecError(
            f"{entry!r} must be NAME:WIDTHxHEIGHT:MODE:FORMAT[:QUALITY] (4 or 5 parts)"
        )
    name, size, mode, image_format = parts[0], parts[1], parts[2].lower(), parts[3].lower()
    if not NAME_RE.match(name):
        raise VariantSpecError(f"{entry!r}: name {name!r} must match [a-z0-9_-]{{1,32}}")
    match = _SIZE_RE.match(size)
    if match is None:
        raise VariantSpecError(f"{entry!r}: size {size!r} must be WIDTHxHEIGHT, e.g. 320x240")
    width_px, height_px = int(match.group(1)), int(match.group(2))
    if not (1 <= width_px <= MAX_SIDE_PX and 1 <= height_px <= MAX_SIDE_PX):
        raise VariantSpecError(
            f"{entry!r}: width and height must be from 1 to {MAX_SIDE_PX} pixels"
        )
    if mode not in MODES:
        raise VariantSpecError(f"{entry!r}: mode {mode!r} must be one of {', '.join(MODES)}")
    if image_format not in ENCODERS:
        raise VariantSpecError(
            f"{entry!r}: format {image_format!r} must be one of {', '.join(ENCODERS)}"
        )
    quality = DEFAULT_QUALITY
    if len(parts) == 5:
        low, high = QUALITY_RANGE
        if not parts[4].isdigit() or not low <= int(parts[4]) <= high:
            raise VariantSpecError(
                f"{entry!r}: quality {parts[4]!r} must be an integer from {low} to {high}"
            )
        quality = int(parts[4])
    return VariantSpec(name, width_px, height_px, mode, image_format, quality)


def parse_variants(raw: str) -> tuple[VariantSpec, ...]:
    """Parse the whole ``PROCESSED_VARIANTS`` value; empty means no variant.

    Raises VariantSpecError on the first bad entry, or when a name is used twice (two
    variants would write the same folder).
    """
    variants: list[VariantSpec] = []
    for entry in raw.split(","):
        if not entry.strip():
            if raw.strip():
                raise VariantSpecError(f"{raw!r} has an empty entry (a stray comma?)")
            continue
        variant = parse_variant(entry)
        if any(v.name == variant.name for v in variants):
            raise VariantSpecError(f"name {variant.name!r} is used twice")
        variants.append(variant)
    return tuple(variants)


def format_variants(variants: tuple[VariantSpec, ...]) -> str:
    """The ``PROCESSED_VARIANTS`` value that parses back to ``variants``."""
    return ",".join(f"{v.name}:{v.width_px}x{v.height_px}:{v.mode}:{v.format}:{v.quality}"
                    for v in variants)
