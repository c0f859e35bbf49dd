"""PROCESSED_VARIANTS: the grammar, canonical spec strings, and errors naming the variable."""

from __future__ import annotations

import pytest

from images_service.config.settings import VARIABLES, SettingsError, load_settings
from images_service.processing.specs import VariantSpec, parse_variants


def test_empty_means_no_variant() -> None:
    assert load_settings({}).processed_variants == ()
    assert load_settings({"PROCESSED_VARIANTS": "  "}).processed_variants == ()


def test_the_contracts_example_parses_with_canonical_specs() -> None:
    settings = load_settings(
        {"PROCESSED_VARIANTS": "thumb:320x320:fit:webp:80,card:640x360:cover:jpeg:85"}
    )
    thumb, card = settings.processed_variants
    assert thumb == VariantSpec("thumb", 320, 320, "fit", "webp", 80)
    assert (thumb.name, thumb.spec) == ("thumb", "320x320:fit:webp:80")
    assert (card.name, card.spec) == ("card", "640x360:cover:jpeg:85")


@pytest.mark.parametrize(
    ("entry", "spec"),
    [
        ("t:320x240:fit:jpeg", "320x240:fit:jpeg:85"),  # default quality written out
        ("t:320x240:fit:jpeg:85", "320x240:fit:jpeg:85"),  # so both spell the same spec
        ("t:320x240:fit:png", "320x240:fit:png"),  # png ignores quality: none in the spec
        ("t:320x240:fit:png:10", "320x240:fit:png"),
        (" t : 1x10000 : COVER : WebP : 1 ", "1x10000:cover:webp:1"),  # case and spaces
        ("a-b_9:10000x1:fit:webp:100", "10000x1:fit:webp:100"),
    ],
)
def test_canonical_spec(entry: str, spec: str) -> None:
    (variant,) = parse_variants(entry)
    assert variant.spec == spec


def test_round_trips_through_the_environment() -> None:
    settings = load_settings({"PROCESSED_VARIANTS": "a:1x2:fit:png:7,b:30x40:cover:jpeg"})
    assert load_settings(settings.to_env()) == settings
    assert "PROCESSED_VARIANTS" in VARIABLES


@pytest.mark.parametrize(
    ("value", "bad_part"),
    [
        ("thumb", "'thumb' must be NAME:WIDTHxHEIGHT:MODE:FORMAT"),
        ("thumb:320x320:fit", "(4 or 5 parts)"),
        ("thumb:320x320:fit:webp:80:1", "(4 or 5 parts)"),
        ("Thumb:320x320:fit:webp", "name 'Thumb'"),
        ("th/umb:320x320:fit:webp", "name 'th/umb'"),
        (f"{'x' * 33}:320x320:fit:webp", "name 'xxx"),
        (":320x320:fit:webp", "name ''"),
        ("thumb:320:fit:webp", "size '320'"),
        ("thumb:320X320:fit:webp", "size '320X320'"),
        ("thumb:-1x320:fit:webp", "size '-1x320'"),
        ("thumb:0x320:fit:webp", "from 1 to 10000"),
        ("thumb:320x10001:fit:webp", "from 1 to 10000"),
        ("thumb:320x320:fill:webp", "mode 'fill'"),
        ("thumb:320x320:fit:gif", "format 'gif'"),
        ("thumb:320x320:fit:jpg", "format 'jpg'"),
        ("thumb:320x320:fit:webp:0", "quality '0'"),
        ("thumb:320x320:fit:webp:101", "quality '101'"),
        ("thumb:320x320:fit:webp:high", "quality 'high'"),
        ("thumb:320x320:fit:png:200", "quality '200'"),  # ignored by png, still checked
        ("a:1x1:fit:png,a:2x2:fit:png", "name 'a' is used twice"),
        ("a:1x1:fit:png,,b:2x2:fit:png", "empty entry"),
        ("a:1x1:fit:png,", "empty entry"),
    ],
)
def test_a_bad_value_fails_naming_the_variable_and_the_bad_part(value: str, bad_part: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"PROCESSED_VARIANTS": value})
    message = str(raised.value)
    assert message.startswith("PROCESSED_VARIANTS")
    assert bad_part in message
