"""Keys of files reconcile may remove (contract §15): the layout's, or a temporary name."""

from __future__ import annotations

import pytest

from images_service.storage.backend import check_file_key, check_key


@pytest.mark.parametrize("key", ["db/c/f/original/.tmp-host.1-99-abc",
                                 "db/c/f/.tmp-abc", "db/c/f/original/img_001.jpg"])
def test_a_temporary_last_segment_is_a_file_key(key):
    assert check_file_key(key) == key


@pytest.mark.parametrize("key", [".tmp-abc", "db/.tmp-x/f/img.jpg", "db/c/f/.hidden",
                                 "db/c/../x/.tmp-a", "db/c/f/.tmp-\x01", "db/c/f/.tmp-a\\b",
                                 "/db/c/.tmp-a"])
def test_anything_else_with_a_dot_or_control_character_is_refused(key):
    with pytest.raises(ValueError):
        check_file_key(key)


@pytest.mark.parametrize("key", ["a/b\x01", "a/\x7f", "a/b\\c", "a/.b", "a//b", "/a", ""])
def test_check_key_still_refuses_control_characters_and_dots(key):
    with pytest.raises(ValueError):
        check_key(key)
