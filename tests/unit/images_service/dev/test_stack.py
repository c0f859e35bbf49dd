"""The dev stack's command lines and banner (the running stack is tested in integration)."""

from __future__ import annotations

from pathlib import Path

from images_service.cli import build_parser
from images_service.config.settings import load_settings
from images_service.dev.stack import banner, child_argv


def test_the_api_of_the_dev_stack_binds_loopback_unless_told_otherwise() -> None:
    args = build_parser().parse_args(["dev"])
    assert args.host == "127.0.0.1"
    assert child_argv("api", host=args.host)[-3:] == ["api", "--host", "127.0.0.1"]
    assert build_parser().parse_args(["dev", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert child_argv("worker", host="0.0.0.0")[-1] == "worker"  # only the api binds a host


def test_banner_redacts_passwords_and_hides_a_key_it_was_given(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "given-key-0001",
                              "MONGODB_URI": "mongodb+srv://app:m-pass-1@cluster.example.net/",
                              "REDIS_URL": "redis://:r-pass-2@cache:6379/0",
                              "STORAGE_PATH": str(tmp_path)})
    text = banner(settings, host="127.0.0.1", generated_key=False)
    for secret in ("given-key-0001", "m-pass-1", "r-pass-2"):
        assert secret not in text
    assert "mongodb+srv://app:***@cluster.example.net/" in text
    assert "redis://:***@cache:6379/0" in text
    assert "from API_KEY / API_KEYS" in text


def test_banner_shows_a_key_it_generated(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "generated-key-0002", "STORAGE_PATH": str(tmp_path)})
    text = banner(settings, host="0.0.0.0", generated_key=True)
    assert "generated-key-0002  (generated for this run)" in text
    assert "http://127.0.0.1:8001/api/v1" in text and "listening on 0.0.0.0" in text


def test_banner_prints_the_console_url(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "generated-key-0003", "STORAGE_PATH": str(tmp_path),
                              "PORT": "8011"})
    text = banner(settings, host="127.0.0.1", generated_key=True)
    assert "console   http://127.0.0.1:8011/ui/" in text
