"""URL extraction (contract §3, §10): shapes, order, duplicates, schemes; property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from images_service.download.urls import extract_image_urls, get_path, is_counted_url

A, B, C = "https://cdn.example.com/a.jpg", "http://cdn.example.com/b.png", "https://x.test/c"


def test_a_single_string() -> None:
    assert extract_image_urls({"images": A}, ["images"]) == [A]


def test_a_list_of_strings_in_document_order() -> None:
    assert extract_image_urls({"images": [B, A, C]}, ["images"]) == [B, A, C]


def test_objects_with_url_else_src() -> None:
    doc = {"images": [{"url": A, "src": B}, {"src": C}, {"alt": "no url"}, {"url": None, "src": B}]}
    assert extract_image_urls(doc, ["images"]) == [A, C, B]


def test_any_nesting_of_lists() -> None:
    doc = {"images": [[A, [B, [{"url": C}]]]]}
    assert extract_image_urls(doc, ["images"]) == [A, B, C]


def test_dotted_paths_and_lists_met_on_the_way() -> None:
    doc = {"media": {"gallery": [A, B]}, "rooms": [{"photos": [C]}, {"photos": {"url": A}}]}
    assert extract_image_urls(doc, ["media.gallery"]) == [A, B]
    assert extract_image_urls(doc, ["rooms.photos"]) == [C, A]
    assert extract_image_urls(doc, ["media.gallery.1"]) == [B]


def test_fields_are_visited_in_the_given_order() -> None:
    doc = {"images": [A], "media": {"gallery": [B]}}
    assert extract_image_urls(doc, ["media.gallery", "images"]) == [B, A]


def test_only_http_and_https_count_and_malformed_ones_still_count() -> None:
    doc = {
        "images": [
            "ftp://x/a.jpg", "data:image/png;base64,AAAA", "/relative.jpg", "cdn.example.com/a.jpg",
            None, 42, {"url": "mailto:x@y"}, "HTTPS://UPPER.example/x.jpg", "http://[bad",
            "http:/x",
        ]
    }
    assert extract_image_urls(doc, ["images"]) == [
        "HTTPS://UPPER.example/x.jpg", "http://[bad", "http:/x",
    ]


def test_exact_duplicates_once_and_the_index_counts_only_counted_urls() -> None:
    # §10: a single http URL after five ignored values is img_001.
    doc = {"images": ["a", 1, None, "ftp://x", {"k": 1}, A, A, A + "?v=2", {"url": A}]}
    urls = extract_image_urls(doc, ["images"])
    assert urls == [A, A + "?v=2"]
    assert urls.index(A) + 1 == 1


def test_missing_fields_and_wrong_types_give_nothing() -> None:
    assert extract_image_urls({}, ["images"]) == []
    assert extract_image_urls({"images": {"nested": A}}, ["images"]) == []
    assert extract_image_urls({"images": 5}, ["images", "media.gallery"]) == []


def test_get_path() -> None:
    doc = {"a": {"b": [10, {"c": "x"}]}}
    assert get_path(doc, "a.b.1.c") == "x"
    assert get_path(doc, "a.z", "missing") == "missing"


def test_is_counted_url() -> None:
    assert is_counted_url(" https://a.test/x ")
    assert not is_counted_url("javascript:alert(1)")
    assert not is_counted_url(b"http://a.test/")


# --- property tests ------------------------------------------------------------------------

_hosts = st.sampled_from(["a.test", "cdn.example.com", "127.0.0.1:8080", "[::1]"])
_http_urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "HTTP"]),
    _hosts,
    st.text(alphabet="abc/._-", max_size=6),
)
_other = st.one_of(
    st.none(), st.integers(), st.booleans(),
    st.sampled_from(["ftp://a.test/x", "data:,x", "x.jpg", "", "mailto:a@b"]),
    st.text(max_size=5),
)
_leaf = st.one_of(
    _http_urls, _other,
    st.builds(lambda u: {"url": u}, st.one_of(_http_urls, _other)),
    st.builds(lambda u: {"src": u}, st.one_of(_http_urls, _other)),
)
_values = st.recursive(_leaf, lambda children: st.lists(children, max_size=4), max_leaves=25)


def _reference(value: Any) -> list[str]:
    """A plain reading of §3 for one field value, duplicates included."""
    if isinstance(value, str):
        return [value] if is_counted_url(value) else []
    if isinstance(value, dict):
        for key in ("url", "src"):
            if isinstance(value.get(key), str):
                return _reference(value[key])
        return []
    if isinstance(value, list):
        return [url for item in value for url in _reference(item)]
    return []


@settings(max_examples=300, deadline=None)
@given(images=_values, gallery=_values)
def test_extraction_matches_the_reference(images: Any, gallery: Any) -> None:
    doc = {"images": images, "media": {"gallery": gallery}}
    result = extract_image_urls(doc, ["images", "media.gallery"])
    expected: list[str] = []
    for url in _reference(images) + _reference(gallery):
        if url not in expected:
            expected.append(url)
    assert result == expected
    assert len(set(result)) == len(result)
    assert all(is_counted_url(url) for url in result)


@settings(max_examples=200, deadline=None)
@given(images=_values)
def test_extraction_is_stable_under_re_extraction(images: Any) -> None:
    once = extract_image_urls({"images": images}, ["images"])
    assert extract_image_urls({"images": once}, ["images"]) == once


def test_the_url_list_hash_keeps_order_and_cannot_be_confused_by_separators():
    from images_service.download.urls import url_list_sha256

    assert url_list_sha256(["a", "b"]) == url_list_sha256(["a", "b"])
    assert url_list_sha256(["a", "b"]) != url_list_sha256(["b", "a"])
    assert url_list_sha256(["a,b"]) != url_list_sha256(["a", "b"])
    assert url_list_sha256(["a\nb"]) != url_list_sha256(["a", "b"])
    assert url_list_sha256([]) != url_list_sha256([""])
    # pinned: write-backs stored today must still compare equal after an upgrade
    assert url_list_sha256(["https://x/a.jpg"]) == \
        "ed96001269a566b3318af64a93b7dea58bdaccd750e203581e1df7d28c2a1236"
