"""Derived images in the download path: make, store and record variants (CONTRACT.md §12).

:mod:`images_service.processing` computes bytes and records; this module is where they meet
the storage and the engine (:mod:`images_service.download.engine` calls it at two seams):

* :func:`validate` — in a download, instead of the plain validation: with
  ``PROCESSED_VARIANTS`` set, one decode proves the body valid and renders every variant
  (``validate_and_render``); without, it is ``validate_image`` and nothing else changes.
* :func:`store_rendered` — after the original is stored: each rendered variant is stored
  atomically at ``processed/{NAME}/img_NNN.{ext}``, and only then does the returned record
  name it under ``processed`` (metadata.json is written later, by ``record_images``).
* :func:`backfill` — on the skip path (an image already stored, no request to its server):
  variants missing from the record, recorded as failed, or made with another ``spec`` are
  rendered from the stored original (read through ``Storage.open``); variants no longer
  configured are dropped from the record. A record from before contract §18 (no ``phash``)
  gets its hash from that decode, and its placeholder reason when it is one (then no
  variant); a record whose variants are current is not decoded, so it stays without one
  until it is downloaded again.

Files no longer named (a variant removed from the setting, an extension that changed, the
variants of an image that failed or went away) are deleted by the prune of
:func:`images_service.storage.folders.prune`, under the document's lock and *after* the
record stops naming them, never here: so metadata.json never names a missing file.

Cost of a skip: the decision is taken from the record alone (``plan_variants`` without a
presence check), so an image whose variants are current costs nothing more than before (no
HEAD per variant on S3). That is safe because a record names a variant only after its
``put_bytes`` succeeded, ``put_bytes`` is atomic and durable on both backends (temp file +
fsync + rename; one PUT), and only the prune deletes variant files, after the record stopped
naming them. A variant file removed by hand is not noticed (``force`` remakes it).

Failure isolation: a variant that cannot be made is recorded as
``{"error": {"code": "processing_failed", …}}`` and the image stays downloaded (or skipped);
a storage failure while storing one is ``StorageUnavailable``, retried like any other.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from images_service import metrics
from images_service.config.settings import Settings
from images_service.content.bits import parse_hex
from images_service.download.decode_budget import budget_for, header_pixels
from images_service.processing.records import (
    has_original,
    merge_processed,
    plan_variants,
    processed_entries,
    variant_file,
)
from images_service.processing.render import (
    RenderedVariant,
    VariantResult,
    render_stored,
    validate_and_render,
)
from images_service.processing.specs import NAME_RE
from images_service.storage.backend import Storage
from images_service.storage.layout import PROCESSED_DIR
from images_service.validation import ImageInfo, validate_image

logger = logging.getLogger(__name__)

#: ``images_processing_seconds{source}``: rendered during a download (the time includes the
#: validation decode they share) or from a stored original (includes reading it).
DOWNLOAD, STORED = "download", "stored"


def validate(
    path: str | os.PathLike[str], settings: Settings, *, sha256: str | None, size: int | None
) -> tuple[ImageInfo, tuple[VariantResult, ...]]:
    """Validate a downloaded body and, when variants are configured, render them from the
    same decode. Raises DownloadError exactly like ``validate_image``.

    The decode waits for its pixels in the process's decode budget (twice them with variants:
    their conversions and resampling buffers), so memory stays bounded (contract §14).
    """
    variants = settings.processed_variants
    if not variants:
        if settings.image_validation == "fast":  # structure checks: no pixel is decoded
            return validate_image(path, settings, sha256=sha256, size=size), ()
        with budget_for(settings.decode_budget_px).hold(header_pixels(path)):
            return validate_image(path, settings, sha256=sha256, size=size), ()
    started_s = time.monotonic()
    with budget_for(settings.decode_budget_px).hold(2 * header_pixels(path)):
        info, results = validate_and_render(path, settings, variants, sha256=sha256, size=size)
    metrics.PROCESSING_SECONDS.labels(DOWNLOAD).observe(time.monotonic() - started_s)
    return info, results


def store_rendered(
    storage: Storage, folder: str, record: dict[str, Any], results: Iterable[VariantResult]
) -> dict[str, Any]:
    """Store a fresh download's variants; returns ``record`` with its ``processed`` entry.

    ``record`` is the image's new record (its original already stored); with no variant
    configured it is returned as it is (no ``processed`` key, contract §10).
    """
    results = tuple(results)
    if not results:
        return record
    _store(storage, folder, record["file"], results)
    return {**record, "processed": processed_entries(record["file"], results)}


def backfill(
    storage: Storage, folder: str, record: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Bring a skipped image's variants up to date, without any request to its server.

    Returns ``record`` itself when nothing is to be done (the usual re-run: no I/O at all),
    else a copy with the new ``processed`` entry. Raises StorageUnavailable when the original
    cannot be read or a variant cannot be stored.
    """
    variants = settings.processed_variants
    plan = plan_variants(record, variants)
    if not plan.render and not plan.removed:
        return record
    results: tuple[VariantResult, ...] = ()
    if plan.render and has_original(record):
        started_s = time.monotonic()
        pixels = 2 * int(record.get("width") or 0) * int(record.get("height") or 0)
        # A record from before §18 has no hash: it gets one from this decode (and, should
        # the pixels make it a placeholder, no variant).
        describe = parse_hex(record.get("phash")) is None
        try:
            with budget_for(settings.decode_budget_px).hold(pixels), \
                    storage.open(f"{folder}/{record['file']}") as original:
                made = render_stored(original, settings, plan.render, describe=describe)
        except FileNotFoundError:
            # Gone since skip_record saw it: record nothing new; the next run fetches it.
            logger.warning("original %s of %s vanished: variants not made", record["file"],
                           folder)
            return record
        metrics.PROCESSING_SECONDS.labels(STORED).observe(time.monotonic() - started_s)
        results = made.results
        if made.phash is not None:
            record = {**record, "phash": made.phash}
        if made.placeholder is not None:
            record = {**record, "placeholder": made.placeholder}
        _store(storage, folder, record["file"], results)
        logger.info("made %d variant(s) of %s in %s from the stored original",
                    len(results), record["file"], folder)
    processed, _stale = merge_processed(record, results, variants)  # stale: the prune's job
    updated = {key: value for key, value in record.items() if key != "processed"}
    if processed:
        updated["processed"] = processed
    return updated


def _store(
    storage: Storage, folder: str, original_file: str, results: Iterable[VariantResult]
) -> None:
    """Put every rendered variant at its key (atomically), count each outcome."""
    for result in results:
        if isinstance(result, RenderedVariant):
            key = f"{folder}/{variant_file(original_file, result.name, result.extension)}"
            storage.put_bytes(key, result.data, content_type=result.content_type)
            metrics.PROCESSED.labels(result.name, "made").inc()
        else:
            logger.warning("variant %s of %s in %s failed: %s", result.name, original_file,
                           folder, result.message)
            metrics.PROCESSED.labels(result.name, "failed").inc()


def count_removed(keys: Iterable[str]) -> None:
    """Count the variant files among ``keys`` (deleted by the prune) by variant name."""
    for key in keys:
        parts = PurePosixPath(key).parts
        # The name comes from the storage: a label only when it is a variant name (bounded).
        if len(parts) >= 3 and parts[-3] == PROCESSED_DIR and NAME_RE.match(parts[-2]):
            metrics.PROCESSED.labels(parts[-2], "removed").inc()
