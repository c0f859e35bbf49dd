"""The ``processed`` entry of an image's metadata.json record, and what to redo (§12).

An image record of metadata.json gains, per configured variant, either

    "thumb": {"file": "processed/thumb/img_001.webp", "format": "WEBP", "width": 320,
              "height": 240, "bytes": 9120, "sha256": "…", "spec": "320x320:fit:webp:80"}

or ``"thumb": {"error": {"code": "processing_failed", "message": "…"}}``. The recorded
``spec`` plays the role of Wagtail's rendition filter spec: on a re-download
:func:`plan_variants` compares it with the configured one and lists the variants to make
again from the stored original; :func:`merge_processed` then builds the new entry and lists
the files that nothing names any more (variants no longer configured, a format that
changed the extension, a re-render that failed, an original that failed or went away).

Choices: a variant recorded as an error has no spec, so it is tried again on every
re-download, like a failed image; a variant whose file the storage no longer has (the
optional ``present`` check) is made again. Variants follow their original: only an image
whose original is stored (status ``downloaded`` or ``skipped`` with a ``file``) has any, and
only when it is no placeholder (contract §18: a record with ``placeholder`` has none, and
the variants it had before it became one are removed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from images_service.processing.render import RenderedVariant, VariantResult
from images_service.processing.specs import VariantSpec
from images_service.storage.layout import PROCESSED_DIR

#: Image statuses whose original is in the storage (contract §6).
_STORED_STATUSES = ("downloaded", "skipped")
#: ``present(file, bytes)``: whether the storage holds ``file`` with that size.
Present = Callable[[str, int], bool]


@dataclass(frozen=True)
class VariantPlan:
    """What a re-download does about one image's variants."""

    render: tuple[VariantSpec, ...]  #: missing, failed before, or made with another spec
    removed: tuple[str, ...]  #: recorded variant names no longer configured


def variant_file(original_file: str, variant_name: str, extension: str) -> str:
    """``processed/thumb/img_001.webp`` for ``original/img_001.jpg`` (relative to the folder)."""
    return f"{PROCESSED_DIR}/{variant_name}/{PurePosixPath(original_file).stem}{extension}"


def variant_entry(result: VariantResult, original_file: str) -> dict[str, Any]:
    """One variant's value under ``processed``."""
    if not isinstance(result, RenderedVariant):
        return {"error": {"code": result.code, "message": result.message}}
    return {
        "file": variant_file(original_file, result.name, result.extension),
        "format": result.format,
        "width": result.width,
        "height": result.height,
        "bytes": result.size_bytes,
        "sha256": result.sha256,
        "spec": result.spec,
    }


def processed_entries(original_file: str, results: Iterable[VariantResult]) -> dict[str, Any]:
    """The ``processed`` dict of a freshly downloaded image, from its rendered variants."""
    return {result.name: variant_entry(result, original_file) for result in results}


def has_original(record: Mapping[str, Any]) -> bool:
    """True when the image's original is stored, so it may have variants."""
    return record.get("status") in _STORED_STATUSES and bool(record.get("file"))


def has_variants(record: Mapping[str, Any]) -> bool:
    """True when the image gets variants: its original is stored and it is no placeholder."""
    return has_original(record) and not record.get("placeholder")


def plan_variants(
    record: Mapping[str, Any],
    variants: Sequence[VariantSpec],
    *,
    present: Present | None = None,
) -> VariantPlan:
    """Which ``variants`` to render for an image record, and which recorded ones to drop."""
    recorded: Mapping[str, Any] = record.get("processed") or {}
    configured = {variant.name for variant in variants}
    removed = tuple(name for name in recorded if name not in configured)
    if not has_variants(record):
        return VariantPlan((), tuple(recorded))
    render = tuple(v for v in variants if not _is_current(recorded.get(v.name), v, present))
    return VariantPlan(render, removed)


def _is_current(entry: Any, variant: VariantSpec, present: Present | None) -> bool:
    if not isinstance(entry, Mapping) or "error" in entry or entry.get("spec") != variant.spec:
        return False
    return present is None or present(entry.get("file", ""), entry.get("bytes", -1))


def merge_processed(
    record: Mapping[str, Any],
    results: Iterable[VariantResult],
    variants: Sequence[VariantSpec],
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The record's new ``processed`` dict and the files (relative paths) to remove.

    ``results`` are the variants just rendered (those of :func:`plan_variants`); the other
    configured variants keep their recorded entry; unconfigured ones are dropped. An image
    without a stored original gets an empty dict and all its recorded files removed.
    """
    recorded: Mapping[str, Any] = record.get("processed") or {}
    fresh = {result.name: result for result in results}
    merged: dict[str, Any] = {}
    if has_variants(record):
        for variant in variants:
            if variant.name in fresh:
                merged[variant.name] = variant_entry(fresh[variant.name], record["file"])
            elif variant.name in recorded:
                merged[variant.name] = recorded[variant.name]
    stale = _files(recorded.values()) - _files(merged.values())
    return merged, tuple(sorted(stale))


def _files(entries: Iterable[Any]) -> set[str]:
    return {e["file"] for e in entries if isinstance(e, Mapping) and e.get("file")}
