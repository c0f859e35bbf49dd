"""Settings of contract §11: STORAGE_BACKEND and the S3_* variables."""

from __future__ import annotations

import pytest

from images_service.config.settings import VARIABLES, SettingsError, load_settings

S3 = {"STORAGE_BACKEND": "s3", "S3_BUCKET": "serpy-images"}


def test_defaults_are_the_contracts() -> None:
    s = load_settings({})
    assert s.storage_backend == "filesystem"
    assert (s.s3_bucket, s.s3_prefix, s.s3_endpoint_url, s.s3_region) == ("", "", "", "us-east-1")
    assert {"STORAGE_BACKEND", "S3_BUCKET", "S3_PREFIX", "S3_ENDPOINT_URL", "S3_REGION"} <= set(
        VARIABLES)


def test_s3_backend_with_every_variable() -> None:
    s = load_settings({**S3, "S3_PREFIX": "images/", "S3_ENDPOINT_URL": "http://seaweedfs:8333",
                       "S3_REGION": "eu-west-3"})
    assert (s.storage_backend, s.s3_bucket, s.s3_prefix) == ("s3", "serpy-images", "images/")
    assert (s.s3_endpoint_url, s.s3_region) == ("http://seaweedfs:8333", "eu-west-3")


def test_s3_without_bucket_fails_fast_naming_s3_bucket() -> None:
    with pytest.raises(SettingsError, match="S3_BUCKET is required when STORAGE_BACKEND=s3"):
        load_settings({"STORAGE_BACKEND": "s3"})
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        load_settings({"STORAGE_BACKEND": "s3", "S3_BUCKET": "  "})


@pytest.mark.parametrize("raw,expected", [
    ("images", "images/"), ("images/", "images/"), ("/images/", "images/"),
    ("a/b", "a/b/"), (" tenant-1/images ", "tenant-1/images/"), ("/", ""), ("", ""),
])
def test_s3_prefix_is_normalised(raw: str, expected: str) -> None:
    assert load_settings({**S3, "S3_PREFIX": raw}).s3_prefix == expected


@pytest.mark.parametrize("name,raw", [
    ("STORAGE_BACKEND", "gcs"),
    ("S3_BUCKET", "ab"),
    ("S3_BUCKET", "bad bucket"),
    ("S3_BUCKET", "-leading-dash"),
    ("S3_PREFIX", "a//b"),
    ("S3_PREFIX", "a/../b"),
    ("S3_PREFIX", "./images"),
    ("S3_PREFIX", "a\\b"),
    ("S3_ENDPOINT_URL", "seaweedfs:8333"),
    ("S3_ENDPOINT_URL", "ftp://seaweedfs:8333"),
    ("S3_ENDPOINT_URL", "http://key:secret@seaweedfs:8333"),
    ("S3_REGION", "eu west"),
])
def test_bad_values_fail_fast_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}=") as info:
        load_settings({**S3, name: raw})
    assert "expected" in str(info.value)


def test_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(SettingsError, match="without credentials") as info:
        load_settings({**S3, "S3_ENDPOINT_URL": "https://AKIAKEY:s3cr3t-value@r2.example.com"})
    assert "s3cr3t-value" not in str(info.value) and "AKIAKEY" not in str(info.value)
    assert "https://***@r2.example.com" in str(info.value)


def test_endpoint_trailing_slash_is_dropped() -> None:
    assert load_settings({**S3, "S3_ENDPOINT_URL": "https://s3.example.com/"}).s3_endpoint_url == (
        "https://s3.example.com")


def test_filesystem_backend_ignores_the_s3_variables() -> None:
    s = load_settings({"S3_PREFIX": "images"})
    assert s.storage_backend == "filesystem" and s.s3_prefix == "images/"


def test_to_env_round_trips_the_storage_settings() -> None:
    s = load_settings({**S3, "S3_PREFIX": "images", "S3_ENDPOINT_URL": "http://127.0.0.1:8333",
                       "S3_REGION": "auto"})
    env = s.to_env()
    assert {k: env[k] for k in ("STORAGE_BACKEND", "S3_BUCKET", "S3_PREFIX", "S3_ENDPOINT_URL",
                                "S3_REGION")} == {
        "STORAGE_BACKEND": "s3", "S3_BUCKET": "serpy-images", "S3_PREFIX": "images/",
        "S3_ENDPOINT_URL": "http://127.0.0.1:8333", "S3_REGION": "auto"}
    assert load_settings(env) == s
