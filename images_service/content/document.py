"""A document's records and what their images show (§18): the one call to make on a
document's merged ``metadata.json`` records before it is written.

:func:`mark_document` sets, on copies of the records, ``placeholder`` and ``duplicate_of``,
and removes them where they no longer hold; :func:`summary_counts` gives
``summary.placeholders`` and ``summary.duplicates``. Records are plain dicts as
metadata.json stores them; only stored images (``downloaded``, ``skipped``) are considered.

Where a record's ``placeholder`` comes from (:func:`record_placeholder`): the download
records the reason its decode found (``ImageInfo.placeholder``); on every merge the reasons
that depend on settings are decided again from the record, so a change of
``MIN_IMAGE_SIDE`` or ``PLACEHOLDER_HASHES`` applies to images already stored on their next
run, without fetching them again:

* ``tiny`` from the record's ``width`` and ``height`` against ``MIN_IMAGE_SIDE``;
* ``blank`` kept as recorded: it is a fact of the pixels, which the record does not hold;
* ``known`` from the record's ``phash`` against ``PLACEHOLDER_HASHES``.

So an image recorded ``tiny`` and no longer tiny is not a placeholder until it is downloaded
again (``force``): whether it is blank was not looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from images_service.config.settings import Settings
from images_service.content.bits import parse_hex
from images_service.content.duplicates import find_duplicates
from images_service.content.placeholders import BLANK, KNOWN, TINY, is_known, is_tiny

#: Statuses whose image is stored, so it shows something (contract §6).
_STORED = ("downloaded", "skipped")
PLACEHOLDER, DUPLICATE_OF, PHASH = "placeholder", "duplicate_of", "phash"


@dataclass(frozen=True)
class ContentRules:
    """The settings of §18 that records are judged by."""

    min_side_px: int = 16
    known_hashes: tuple[int, ...] = ()
    duplicate_distance_bits: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> ContentRules:
        return cls(
            min_side_px=settings.min_image_side_px,
            known_hashes=tuple(int(h, 16) for h in settings.placeholder_hashes),
            duplicate_distance_bits=settings.duplicate_distance_bits,
        )


def record_placeholder(record: Mapping[str, Any], rules: ContentRules) -> str | None:
    """The placeholder reason of a stored image's record under ``rules``, or None."""
    if record.get("status") not in _STORED:
        return None
    width, height = record.get("width"), record.get("height")
    if isinstance(width, int) and isinstance(height, int) and is_tiny(
            width, height, rules.min_side_px):
        return TINY
    if record.get(PLACEHOLDER) == BLANK:
        return BLANK
    phash = parse_hex(record.get(PHASH))
    if phash is not None and is_known(phash, rules.known_hashes):
        return KNOWN
    return None


def with_placeholder(record: Mapping[str, Any], rules: ContentRules) -> dict[str, Any]:
    """A copy of one stored image's ``record`` with ``placeholder`` as ``rules`` decide it
    (set, changed or removed): what the skip path and copies do before their variants are
    brought up to date, since a placeholder has none."""
    copy = {k: v for k, v in record.items() if k != PLACEHOLDER}
    reason = record_placeholder(record, rules)
    if reason is not None:
        copy[PLACEHOLDER] = reason
    return copy


def mark_document(
    records: Iterable[Mapping[str, Any]], rules: ContentRules
) -> list[dict[str, Any]]:
    """Copies of ``records`` (in index order) with ``placeholder`` and ``duplicate_of`` set
    where they hold and absent elsewhere (contract §18: no such key otherwise)."""
    marked: list[dict[str, Any]] = []
    for record in sorted(records, key=lambda r: r["index"]):
        copy = with_placeholder(record, rules)
        copy.pop(DUPLICATE_OF, None)
        marked.append(copy)
    candidates = []
    for record in marked:
        phash = parse_hex(record.get(PHASH))
        if record.get("status") in _STORED and PLACEHOLDER not in record and phash is not None:
            candidates.append((record["index"], phash))
    duplicates = find_duplicates(candidates, rules.duplicate_distance_bits)
    for record in marked:
        if record["index"] in duplicates:
            record[DUPLICATE_OF] = duplicates[record["index"]]
    return marked


def summary_counts(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{"placeholders": n, "duplicates": n}`` of records marked by :func:`mark_document`."""
    placeholders = duplicates = 0
    for record in records:
        placeholders += PLACEHOLDER in record
        duplicates += DUPLICATE_OF in record
    return {"placeholders": placeholders, "duplicates": duplicates}


def newly_marked(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, int], int]:
    """What ``after`` (a document's marked records) marks that ``before`` (the same
    document's records as they were) did not: ``({reason: n}, duplicates)``.

    An image is told by its URL, so a re-merge, a re-download of the same URL or a move to
    another index (§15) is not a new mark; a placeholder whose reason changed is counted
    under the new one. This is what ``images_placeholders_total`` and
    ``images_duplicates_total`` count: each image once, when it is first marked.
    """
    marks: dict[str, tuple[str | None, bool]] = {}
    for record in before:
        url = record.get("url")
        if isinstance(url, str):
            reason, duplicate = marks.get(url, (None, False))
            marks[url] = (record.get(PLACEHOLDER) or reason,
                          duplicate or DUPLICATE_OF in record)
    reasons: dict[str, int] = {}
    duplicates = 0
    for record in after:
        url = record.get("url")
        old_reason, was_duplicate = marks.get(url, (None, False)) if isinstance(
            url, str) else (None, False)
        reason = record.get(PLACEHOLDER)
        if reason is not None and reason != old_reason:
            reasons[reason] = reasons.get(reason, 0) + 1
        if DUPLICATE_OF in record and not was_duplicate:
            duplicates += 1
    return reasons, duplicates
