"""64-bit hashes as ints and 16 hex digits; Hamming distance (contract §18)."""

from __future__ import annotations

import pytest

from images_service.content.bits import distance, from_hex, nearest, parse_hex, to_hex


def test_hex_round_trip_keeps_16_lowercase_digits() -> None:
    assert to_hex(0) == "0000000000000000"
    assert to_hex(0x8F373714ACFCF4D0) == "8f373714acfcf4d0"
    assert from_hex("8F373714ACFCF4D0") == 0x8F373714ACFCF4D0
    assert to_hex((1 << 64) - 1) == "f" * 16


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_to_hex_refuses_what_is_not_64_bits(value: int) -> None:
    with pytest.raises(ValueError):
        to_hex(value)


@pytest.mark.parametrize("text", ["", "8f373714acfcf4d", "8f373714acfcf4d00", "0x8f373714acfcf4",
                                  "8f373714acfcf4dg", " 8f373714acfcf4d0", None, 12])
def test_from_hex_refuses_anything_but_16_hex_digits(text: object) -> None:
    with pytest.raises(ValueError):
        from_hex(text)  # type: ignore[arg-type]
    assert parse_hex(text) is None


def test_distance_counts_differing_bits() -> None:
    assert distance(0, 0) == 0
    assert distance(0, (1 << 64) - 1) == 64
    assert distance(0b1011, 0b0110) == 3
    assert distance(from_hex("8f373714acfcf4d0"), from_hex("8f373714acfcf4d1")) == 1


def test_nearest() -> None:
    assert nearest(0, []) is None
    assert nearest(0b1111, [0, 0b0111, 0b1]) == 1
