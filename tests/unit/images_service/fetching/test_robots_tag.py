"""X-Robots-Tag opt-outs (contract §17): unscoped and scoped directives, our product token."""

from __future__ import annotations

import pytest

from images_service.fetching.robots_tag import directives, refusal

DISALLOWED = ("noai", "noimageai")


@pytest.mark.parametrize(("values", "refused"), [
    (["noai"], "noai"),
    (["NoImageAI"], "noimageai"),
    (["noindex, nofollow"], None),
    (["noindex", "noimageai"], "noimageai"),  # the header given twice
    (["serpy-images: noai"], "serpy-images: noai"),
    (["Serpy-Images: noindex, NOAI"], "serpy-images: noai"),  # the scope covers the list
    (["otherbot: noai"], None),  # another crawler's directive
    (["otherbot: noai", "noindex"], None),
    (["otherbot: noindex", "serpy-images: noimageai"], "serpy-images: noimageai"),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST, noai"], "noai"),  # a valued directive
    (["max-image-preview: large"], None),
    ([""], None),
    ([], None),
])
def test_refusal(values: list[str], refused: str | None) -> None:
    assert refusal(values, DISALLOWED, "serpy-images") == refused


def test_nothing_is_refused_without_disallowed_directives() -> None:
    assert refusal(["noai", "serpy-images: noai"], (), "serpy-images") is None


def test_directives_keep_their_scope_within_one_value_only() -> None:
    assert directives(["googlebot: noindex, nofollow", "noarchive"]) == [
        ("googlebot", "noindex"), ("googlebot", "nofollow"), (None, "noarchive")]


def test_the_politeness_refusals_are_never_retried() -> None:
    from images_service.errors import POLITENESS_CODES, DownloadError

    assert POLITENESS_CODES == {"robots_disallowed", "opted_out"}
    assert not any(DownloadError(code).retryable for code in POLITENESS_CODES)
