"""Find the image URLs of a document (CONTRACT.md §3 and §10).

For each dotted path of ``IMAGE_FIELDS`` (or a request's ``image_fields``) the value may be a
URL string, a list of URL strings, a list of objects with a ``url`` (else ``src``) key, or any
nesting of these lists. Only strings whose scheme is ``http`` or ``https`` count; such a string
that is otherwise malformed still counts (the fetcher records it as failed ``invalid_url``).
URLs come out in document order with exact duplicates removed; the image index used for file
names is the 1-based position in that list.

Path resolution follows MongoDB's dotted-path semantics where they matter: a list met in the
middle of a path is traversed element by element (``media.gallery`` finds the galleries of
every element of a ``media`` list), and a numeric segment indexes a list (``images.0``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

#: A scheme as RFC 3986 spells it, followed by ``:``.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
#: Schemes whose URLs count as image URLs.
COUNTED_SCHEMES = frozenset({"http", "https"})
#: Nesting deeper than this is not followed (protects against pathological documents).
MAX_DEPTH = 32


def is_counted_url(value: object) -> bool:
    """True when ``value`` is a string with an http or https scheme (malformed or not).

    Leading and trailing whitespace is ignored for this test, as browsers do; the string
    itself is kept unchanged.
    """
    if not isinstance(value, str):
        return False
    match = _SCHEME_RE.match(value.strip())
    return match is not None and match.group(1).lower() in COUNTED_SCHEMES


def extract_image_urls(doc: Mapping[str, Any], image_fields: Sequence[str]) -> list[str]:
    """The counted image URLs of ``doc``: document order, exact duplicates once.

    ``image_fields`` are dotted paths; paths are visited in the given order, so with
    ``["images", "media.gallery"]`` every URL of ``images`` comes first.
    """
    seen: set[str] = set()
    urls: list[str] = []
    for field in image_fields:
        for value in _resolve(doc, field.split("."), 0):
            for url in _candidates(value, 0):
                if url not in seen:
                    seen.add(url)
                    urls.append(url)
    return urls


def url_list_sha256(urls: Sequence[str]) -> str:
    """A fingerprint of a URL list, order included (the write-back's ``urls_sha256``).

    The list is hashed as a JSON array, so no URL's characters (a comma, a newline) can make
    two different lists hash alike.
    """
    encoded = json.dumps(list(urls), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def get_path(doc: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The value at dotted ``path`` of ``doc`` without list traversal, or ``default``."""
    current: Any = doc
    for segment in path.split("."):
        if isinstance(current, Mapping) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return default
    return current


def _resolve(value: Any, segments: list[str], depth: int) -> Iterator[Any]:
    """Yield every value reached by ``segments`` from ``value`` (lists traversed)."""
    if not segments:
        yield value
        return
    if depth > MAX_DEPTH:
        return
    head, rest = segments[0], segments[1:]
    if isinstance(value, Mapping):
        if head in value:
            yield from _resolve(value[head], rest, depth + 1)
    elif isinstance(value, list):
        if head.isdigit():
            position = int(head)
            if position < len(value):
                yield from _resolve(value[position], rest, depth + 1)
        else:
            for item in value:
                if isinstance(item, (Mapping, list)):
                    yield from _resolve(item, segments, depth + 1)


def _candidates(value: Any, depth: int) -> Iterator[str]:
    """Yield the counted URLs held by one field value, in order."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        if is_counted_url(value):
            yield value
    elif isinstance(value, Mapping):
        # An object contributes its ``url``, else its ``src`` (the first that is a string).
        for key in ("url", "src"):
            candidate = value.get(key)
            if isinstance(candidate, str):
                if is_counted_url(candidate):
                    yield candidate
                return
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _candidates(item, depth + 1)
