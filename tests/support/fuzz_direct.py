"""The fuzz corpus through the service's own validation and rendering entry points, in process.

For one file and both ``IMAGE_VALIDATION`` modes, :func:`check_file` calls what a download
calls: ``validate_image`` (no variants configured) and ``download.variants.validate`` (with
``PROCESSED_VARIANTS``: one decode validates and renders), and once what a re-download calls
on a stored original, ``processing.render.render_variants`` (on an open file, as the storage
hands it). Contract §14 for each call: the file validates, every variant is made or recorded
``processing_failed``, or it raises ``DownloadError`` with a validation code of §6. Anything
else is an *escape*, reported with its traceback; so is a made variant that is not the image
its record says (format, size inside its box, bytes that decode).
"""

from __future__ import annotations

import io
import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from images_service.config.settings import Settings, load_settings
from images_service.download import variants as download_variants
from images_service.errors import DownloadError
from images_service.processing.render import RenderedVariant, VariantFailure, render_variants
from images_service.validation import validate_image
from tests.support.fuzz_corpus import FuzzFile

VARIANTS = "thumb:64x64:fit:webp:80,card:64x32:cover:jpeg:85,p:48x48:fit:png"
#: What validation may answer for a file (contract §6); anything else is a bug.
VALIDATION_CODES = frozenset({"not_an_image", "corrupt_image", "decompression_bomb"})
MODES = ("full", "fast")
#: Pixel limit of the fuzz runs: lying headers above it are refused before any decode, and
#: those below it (decoded) cost at most a 16 MB frame, so a CI run stays fast and small.
#: The code path is the one of the default limit.
MAX_PIXELS = 4_194_304


def fuzz_env(mode: str, *, with_variants: bool = True,
             max_pixels: int = MAX_PIXELS) -> dict[str, str]:
    """The settings of a fuzz run in ``mode`` (the worker layer's too)."""
    return {"IMAGE_VALIDATION": mode, "MAX_IMAGE_PIXELS": str(max_pixels),
            "PROCESSED_VARIANTS": VARIANTS if with_variants else ""}


def fuzz_settings(mode: str, *, with_variants: bool, **env: str) -> Settings:
    return load_settings({**fuzz_env(mode, with_variants=with_variants), **env})


@dataclass
class Outcome:
    """What each call answered for one file: ``ok`` or an error code, and every escape."""

    item: FuzzFile
    answers: dict[str, str] = field(default_factory=dict)  #: call -> "ok" or a code
    escapes: list[str] = field(default_factory=list)  #: call, exception, traceback
    variants_failed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Tally:
    """Totals over a run."""

    files: int = 0
    formats: Counter = field(default_factory=Counter)
    answers: Counter = field(default_factory=Counter)  #: (call, answer) -> files
    escapes: list[str] = field(default_factory=list)
    variants_failed: int = 0
    call_seconds: Counter = field(default_factory=Counter)  #: call -> seconds spent in it

    def add(self, outcome: Outcome) -> None:
        self.files += 1
        self.formats[outcome.item.format] += 1
        self.answers.update(outcome.answers.items())
        self.escapes.extend(outcome.escapes)
        self.variants_failed += outcome.variants_failed
        self.call_seconds.update(outcome.seconds)


class Checker:
    """Runs :func:`check_file` with the settings of both modes built once."""

    def __init__(self, **env: str) -> None:
        self.plain = {mode: fuzz_settings(mode, with_variants=False, **env) for mode in MODES}
        self.with_variants = {mode: fuzz_settings(mode, with_variants=True, **env)
                              for mode in MODES}

    def check_file(self, item: FuzzFile, path: Path) -> Outcome:
        outcome = Outcome(item)
        warnings = _Warnings()
        validation_logger = logging.getLogger("images_service.validation")
        validation_logger.addHandler(warnings)
        try:
            for mode in MODES:
                self._call(outcome, f"{mode}/validate_image",
                           lambda mode=mode: _validated(validate_image(path, self.plain[mode])))
                self._call(outcome, f"{mode}/variants.validate",
                           lambda mode=mode: self._validate_with_variants(outcome, path, mode))
            self._call(outcome, "stored/render_variants",
                       lambda: self._render_stored(outcome, path))
        finally:
            validation_logger.removeHandler(warnings)
        # Validation's safety nets (a structural rule or the decode-size hook that raised)
        # keep a worker safe, but each is a bug to fix: here it fails the run.
        outcome.escapes.extend(f"{item.name}: validation warned: {message}"
                               for message in warnings.messages)
        return outcome

    def _call(self, outcome: Outcome, call: str, work: Callable[[], str]) -> None:
        started_s = time.monotonic()
        try:
            outcome.answers[call] = work()
        except DownloadError as e:
            outcome.answers[call] = e.code
            if e.code not in VALIDATION_CODES:
                outcome.escapes.append(f"{outcome.item.name} {call}: code {e.code!r} ({e})")
        except Exception as e:  # noqa: BLE001 -- the very thing this harness looks for
            outcome.answers[call] = f"escape:{type(e).__name__}"
            outcome.escapes.append(f"{outcome.item.name} {call}: {type(e).__name__}: {e}\n"
                                   + traceback.format_exc())
        outcome.seconds[call] = time.monotonic() - started_s

    def _validate_with_variants(self, outcome: Outcome, path: Path, mode: str) -> str:
        settings = self.with_variants[mode]
        info, results = download_variants.validate(path, settings, sha256=None, size=None)
        if info.placeholder is not None:  # contract §18: placeholders get no variants
            if results:
                outcome.escapes.append(f"{outcome.item.name} {mode}/variants.validate: "
                                       f"placeholder {info.placeholder} with variants")
            return "ok"
        self._check_results(outcome, f"{mode}/variants.validate", results, settings)
        return "ok"

    def _render_stored(self, outcome: Outcome, path: Path) -> str:
        settings = self.with_variants["full"]
        with open(path, "rb") as original:
            results = render_variants(original, settings, settings.processed_variants)
        self._check_results(outcome, "stored/render_variants", results, settings)
        return "ok" if any(isinstance(r, RenderedVariant) for r in results) else "no variant"

    def _check_results(self, outcome: Outcome, call: str, results: tuple,
                       settings: Settings) -> None:
        specs = {spec.name: spec for spec in settings.processed_variants}
        if sorted(r.name for r in results) != sorted(specs):
            outcome.escapes.append(f"{outcome.item.name} {call}: variants {results!r}")
        for result in results:
            if isinstance(result, VariantFailure):
                if call.endswith("variants.validate"):  # the original is valid there
                    outcome.variants_failed += 1
                if result.code != "processing_failed":
                    outcome.escapes.append(f"{outcome.item.name} {call}: {result!r}")
                continue
            spec = specs[result.name]
            image = Image.open(io.BytesIO(result.data))
            image.load()
            if (image.format != result.format or image.size != (result.width, result.height)
                    or result.width > spec.width_px or result.height > spec.height_px):
                outcome.escapes.append(
                    f"{outcome.item.name} {call}: variant {result.name} is {image.format} "
                    f"{image.size}, recorded {result.format} {result.width}x{result.height}")


def _validated(_info: object) -> str:
    return "ok"


class _Warnings(logging.Handler):
    """Collects the WARNING (and worse) messages of a logger while attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
