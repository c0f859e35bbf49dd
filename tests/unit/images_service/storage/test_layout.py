"""Storage layout (contract §5): slugs, safe segments, folder and file names; property tests."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from images_service.errors import UnsafePathError
from images_service.storage import layout


@pytest.mark.parametrize(
    ("value", "slug"),
    [
        ("Hotel Ritz Madrid", "hotel-ritz-madrid"),
        ("Café Crème Brûlée", "cafe-creme-brulee"),
        ("ÁÉÍÓÚ ñ Ç Å Ø", "aeiou-n-c-a"),  # Ø has no decomposition: it becomes a separator
        ("  --Hello, World!!--  ", "hello-world"),
        ("a__b..c//d", "a-b-c-d"),
        ("Hôtel №5 ﬁne", "hotel-no5-fine"),  # NFKD: № -> No, ﬁ -> fi
        ("!!! ???", ""),
        ("", ""),
        (None, ""),
        (12345, "12345"),
        ("日本語のホテル", ""),
    ],
)
def test_slug_cases(value: object, slug: str) -> None:
    assert layout.slugify(value) == slug


def test_slug_is_cut_to_64_characters() -> None:
    assert layout.slugify("x" * 100) == "x" * 64
    assert len(layout.slugify("word " * 40)) <= 64


def test_a_trailing_dash_left_by_the_cut_is_removed() -> None:
    # The 64th character is the "-" between the words: cut, then stripped.
    value = "a" * 63 + " b"
    assert layout.slugify(value) == "a" * 63


def test_folder_names() -> None:
    assert layout.folder_name("507f1f77bcf86cd799439011", "hotel-ritz") == (
        "507f1f77bcf86cd799439011-hotel-ritz"
    )
    assert layout.folder_name("42", "") == "42"
    assert layout.relative_folder("serpy_db", "hotels", "42", "") == "serpy_db/hotels/42"


def test_document_ids_to_strings() -> None:
    oid = ObjectId("507f1f77bcf86cd799439011")
    assert layout.document_id_str(oid) == "507f1f77bcf86cd799439011"
    assert layout.document_id_str("abc") == "abc"
    assert layout.document_id_str(42) == "42"
    u = uuid.UUID(int=1)
    assert layout.document_id_str(u) == str(u)
    for bad in (True, {"a": 1}, [1], 1.5, None):
        with pytest.raises(UnsafePathError):
            layout.document_id_str(bad)


@pytest.mark.parametrize(
    "segment",
    ["", ".", "..", "../etc", "a/b", "/abs", "a\\b", "a\x00b", ".hidden", " padded", "tab\t",
     "new\nline", "x" * 200, "\x7f"],
)
def test_unsafe_segments_are_refused(segment: str) -> None:
    with pytest.raises(UnsafePathError):
        layout.check_segment(segment, "document id")


@pytest.mark.parametrize("name", ["..", "a/b", "bad name", "a.b", "", "x" * 64, "$db"])
def test_bad_database_names(name: str) -> None:
    with pytest.raises(UnsafePathError):
        layout.check_database(name)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".hidden", "1abc", "a b", "a\\b"])
def test_bad_collection_names(name: str) -> None:
    with pytest.raises(UnsafePathError):
        layout.check_collection(name)


def test_good_names_pass() -> None:
    assert layout.check_database("serpy_db") == "serpy_db"
    assert layout.check_collection("hotels.v2") == "hotels.v2"
    assert layout.check_segment("507f1f77bcf86cd799439011", "id")
    assert layout.check_segment("id with spaces-and-ünïcode", "id")


def test_document_folder_stays_inside_storage(tmp_path: Path) -> None:
    assert layout.document_folder(tmp_path, "db/coll/1-x") == tmp_path / "db" / "coll" / "1-x"
    with pytest.raises(UnsafePathError):
        layout.document_folder(tmp_path, "db/../../escape")


def test_extensions_and_file_names() -> None:
    assert layout.EXTENSIONS == {
        "JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
        "TIFF": ".tif", "AVIF": ".avif",
    }
    assert layout.image_filename(1, ".jpg") == "img_001.jpg"
    assert layout.image_filename(42, ".png") == "img_042.png"
    assert layout.image_filename(1234, ".gif") == "img_1234.gif"
    assert layout.image_relpath(7, ".webp") == "original/img_007.webp"
    assert layout.parse_image_filename("img_007.webp") == (7, ".webp")
    assert layout.parse_image_filename("img_7.webp") is None
    assert layout.parse_image_filename(".tmp-x.part") is None
    with pytest.raises(ValueError):
        layout.image_filename(0, ".jpg")


# --- property tests ------------------------------------------------------------------------

_SLUG_RE = re.compile(r"^([a-z0-9]+(-[a-z0-9]+)*)?$")


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_slug_shape(value: str) -> None:
    slug = layout.slugify(value)
    assert _SLUG_RE.match(slug), slug
    assert len(slug) <= 64
    assert layout.slugify(slug) == slug  # idempotent


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")), min_size=1))
def test_plain_lowercase_words_are_kept(word: str) -> None:
    assert layout.slugify(word) == word[:64]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_accepted_id_stays_inside_storage(document_id: str) -> None:
    root = Path("/srv/images")
    try:
        layout.check_segment(document_id, "document id")
    except UnsafePathError:
        return
    relative = layout.relative_folder("db", "coll", document_id, layout.slugify(document_id))
    folder = layout.document_folder(root, relative)
    assert folder.parent == root / "db" / "coll"
