"""Settings of contract §8: IMAGE_VALIDATION (full | fast)."""

from __future__ import annotations

import pytest

from images_service.config.settings import VARIABLES, SettingsError, load_settings


def test_default_is_full_and_the_variable_is_listed() -> None:
    assert load_settings({}).image_validation == "full"
    assert "IMAGE_VALIDATION" in VARIABLES


@pytest.mark.parametrize(("raw", "expected"), [("fast", "fast"), (" FAST ", "fast"),
                                               ("full", "full"), ("", "full")])
def test_accepted_values(raw: str, expected: str) -> None:
    assert load_settings({"IMAGE_VALIDATION": raw}).image_validation == expected


@pytest.mark.parametrize("raw", ["quick", "none", "fast,full"])
def test_a_bad_value_fails_fast_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"IMAGE_VALIDATION": raw, "MAX_RETRIES": "lots"})
    assert excinfo.value.variables == ("MAX_RETRIES", "IMAGE_VALIDATION")
    assert f"IMAGE_VALIDATION={raw!r} is invalid: expected one of full, fast" in str(excinfo.value)


def test_to_env_round_trips_the_mode() -> None:
    settings = load_settings({"IMAGE_VALIDATION": "fast"})
    assert settings.to_env()["IMAGE_VALIDATION"] == "fast"
    assert load_settings(settings.to_env()) == settings
