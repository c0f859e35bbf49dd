"""Settings of contract §17: RESPECT_ROBOTS_TXT, DISALLOWED_HEADER_DIRECTIVES, HOST_BREAKER_FAILURES."""

from __future__ import annotations

import pytest

from images_service.config.settings import VARIABLES, SettingsError, load_settings

NAMES = ("RESPECT_ROBOTS_TXT", "DISALLOWED_HEADER_DIRECTIVES", "HOST_BREAKER_FAILURES")


def test_defaults_and_the_variables_are_listed() -> None:
    settings = load_settings({})
    assert settings.respect_robots_txt is False
    assert settings.disallowed_header_directives == ()
    assert settings.host_breaker_failures == 10
    assert set(NAMES) <= set(VARIABLES)


def test_values_are_parsed() -> None:
    settings = load_settings({"RESPECT_ROBOTS_TXT": "true",
                              "DISALLOWED_HEADER_DIRECTIVES": " NoAI, noimageai,noai ",
                              "HOST_BREAKER_FAILURES": "3"})
    assert settings.respect_robots_txt is True
    assert settings.disallowed_header_directives == ("noai", "noimageai")
    assert settings.host_breaker_failures == 3
    assert load_settings(settings.to_env()) == settings


@pytest.mark.parametrize(("name", "raw", "form"), [
    ("RESPECT_ROBOTS_TXT", "sometimes", "true or false"),
    ("DISALLOWED_HEADER_DIRECTIVES", "noai,no ai", "X-Robots-Tag directive names"),
    ("DISALLOWED_HEADER_DIRECTIVES", "serpy-images: noai", "X-Robots-Tag directive names"),
    ("HOST_BREAKER_FAILURES", "0", "an integer from 1 to 10000"),
    ("HOST_BREAKER_FAILURES", "ten", "an integer from 1 to 10000"),
])
def test_a_bad_value_fails_naming_the_variable(name: str, raw: str, form: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({name: raw})
    assert excinfo.value.variables == (name,)
    assert f"{name}={raw!r} is invalid" in str(excinfo.value) and form in str(excinfo.value)


@pytest.mark.parametrize(("agent", "token"), [
    ("serpy-images/1.2.3", "serpy-images"),
    ("Serpy-Images/2 (+https://serpy.example/bot)", "serpy-images"),
    ("mybot", "mybot"),
])
def test_the_robots_product_token_is_the_user_agents_first_word_before_the_slash(
        agent: str, token: str) -> None:
    assert load_settings({"USER_AGENT": agent}).robots_token == token
