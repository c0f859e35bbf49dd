"""Settings of contract §18: PERCEPTUAL_HASH, MIN_IMAGE_SIDE, PLACEHOLDER_HASHES and
DUPLICATE_DISTANCE."""

from __future__ import annotations

import pytest

from images_service.config.settings import VARIABLES, SettingsError, load_settings

NAMES = ("PERCEPTUAL_HASH", "MIN_IMAGE_SIDE", "PLACEHOLDER_HASHES", "DUPLICATE_DISTANCE")


def test_defaults_are_the_contracts_and_every_variable_is_listed() -> None:
    s = load_settings({})
    assert s.perceptual_hash is False
    assert s.min_image_side_px == 16
    assert s.placeholder_hashes == ()
    assert s.duplicate_distance_bits == 4
    assert set(NAMES) <= set(VARIABLES)


def test_every_variable_set() -> None:
    s = load_settings({"PERCEPTUAL_HASH": "true", "MIN_IMAGE_SIDE": "0",
                       "PLACEHOLDER_HASHES": " 8F373714ACFCF4D0, 0000000000000000,8f373714acfcf4d0",
                       "DUPLICATE_DISTANCE": "64"})
    assert s.perceptual_hash is True
    assert s.min_image_side_px == 0
    # Lowercased, in order, a repeat dropped.
    assert s.placeholder_hashes == ("8f373714acfcf4d0", "0000000000000000")
    assert s.duplicate_distance_bits == 64


def test_empty_values_are_the_defaults() -> None:
    assert load_settings({name: "" for name in NAMES}) == load_settings({})


@pytest.mark.parametrize(("name", "raw", "form"), [
    ("PERCEPTUAL_HASH", "maybe", "true or false"),
    ("MIN_IMAGE_SIDE", "-1", "an integer from 0 to 10000"),
    ("MIN_IMAGE_SIDE", "16px", "an integer from 0 to 10000"),
    ("PLACEHOLDER_HASHES", "8f373714acfcf4d", "comma-separated perceptual hashes"),
    ("PLACEHOLDER_HASHES", "8f373714acfcf4d0,8f373714acfcf4dg", "comma-separated perceptual"),
    ("PLACEHOLDER_HASHES", "0x8f373714acfcf4d0", "comma-separated perceptual hashes"),
    ("DUPLICATE_DISTANCE", "65", "an integer from 0 to 64"),
    ("DUPLICATE_DISTANCE", "-1", "an integer from 0 to 64"),
])
def test_a_bad_value_fails_naming_the_variable(name: str, raw: str, form: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({name: raw})
    assert excinfo.value.variables == (name,)
    assert f"{name}={raw!r} is invalid: expected {form}" in str(excinfo.value)


def test_to_env_round_trips() -> None:
    settings = load_settings({"PERCEPTUAL_HASH": "yes", "MIN_IMAGE_SIDE": "8",
                              "PLACEHOLDER_HASHES": "8f373714acfcf4d0,ffffffff00000000",
                              "DUPLICATE_DISTANCE": "6"})
    env = settings.to_env()
    assert (env["PERCEPTUAL_HASH"], env["MIN_IMAGE_SIDE"], env["DUPLICATE_DISTANCE"]) == (
        "true", "8", "6")
    assert env["PLACEHOLDER_HASHES"] == "8f373714acfcf4d0,ffffffff00000000"
    assert load_settings(env) == settings
