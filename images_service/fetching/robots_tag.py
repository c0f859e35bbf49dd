"""``X-Robots-Tag`` opt-outs (contract §17): does a response refuse to be used by us?

A response may carry the header several times; each value is a comma-separated list of
directives, optionally scoped to one crawler by a ``<product token>:`` prefix that applies to
the directives after it in that value (``X-Robots-Tag: serpy-images: noai, noimageai``).
Directives that take a value of their own (``unavailable_after: <date>``, ``max-snippet: 20``)
are told apart from a scope by their names. The response is refused when a directive of
``DISALLOWED_HEADER_DIRECTIVES`` appears unscoped, or scoped to ``USER_AGENT``'s product token;
directives scoped to other crawlers are ignored. Names compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Directives written ``name: value``: their colon is not a crawler scope.
VALUED_DIRECTIVES = frozenset({
    "unavailable_after", "max-snippet", "max-image-preview", "max-video-preview",
})


def directives(values: Iterable[str]) -> list[tuple[str | None, str]]:
    """``(scope, directive)`` pairs of the header's values; scope None means every crawler."""
    found: list[tuple[str | None, str]] = []
    for value in values:
        scope: str | None = None
        for part in value.split(","):
            text = part.strip()
            if not text:
                continue
            head, colon, rest = text.partition(":")
            head = head.strip().lower()
            if colon and head and head not in VALUED_DIRECTIVES and " " not in head:
                scope, text = head, rest.strip()
                if not text:
                    continue
            found.append((scope, text.split(":", 1)[0].strip().lower()))
    return found


def refusal(values: Iterable[str], disallowed: Iterable[str], product_token: str) -> str | None:
    """The first directive of ``values`` that refuses the response, as written
    (``noai`` or ``serpy-images: noai``), or None."""
    wanted = {name.lower() for name in disallowed}
    token = product_token.lower()
    for scope, name in directives(values):
        if name in wanted and (scope is None or scope == token):
            return name if scope is None else f"{scope}: {name}"
    return None
