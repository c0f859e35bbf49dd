"""Structured logs: JSON lines in production, text in development, job context on each line."""

from __future__ import annotations

import json
import logging

from images_service.logs import configure_logging, log_context


def test_json_lines_carry_the_job_context(capsys) -> None:
    configure_logging("INFO", json_lines=True)
    log = logging.getLogger("images_service.test")
    with log_context(job_id="job-1", document_id="doc-9"):
        log.info("downloaded %d images", 3)
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "downloaded 3 images"
    assert lines[0]["job_id"] == "job-1" and lines[0]["document_id"] == "doc-9"
    assert lines[0]["level"] == "INFO" and lines[0]["time"].endswith("Z")
    assert "job_id" not in lines[1]


def test_exceptions_are_one_json_line(capsys) -> None:
    configure_logging("INFO", json_lines=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = capsys.readouterr().err.splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_format_in_development(capsys) -> None:
    configure_logging("DEBUG", json_lines=False)
    with log_context(job_id="j2"):
        logging.getLogger("y").debug("hello")
    err = capsys.readouterr().err
    assert "hello" in err and "job_id=j2" in err
    configure_logging("INFO", json_lines=True)
