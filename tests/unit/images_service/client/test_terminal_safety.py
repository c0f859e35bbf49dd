"""No terminal escape sequence from the server reaches the operator's terminal (contract §14
"Surface"): every line the command line prints from a job escapes control characters."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from images_service.client import commands
from images_service.client import format as fmt
from images_service.client.http import ApiClientError
from images_service.client.progress import follow
from tests.unit.images_service.client.factories import make_job

#: What a hostile document or image host can put in a URL, a message or an id.
HOSTILE = {
    "ESC (colours)": "\x1b[31mred\x1b[0m",
    "ESC (clear screen, cursor home)": "\x1b[2J\x1b[H",
    "OSC 8 hyperlink": "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\",
    "OSC 0 window title, BEL-terminated": "\x1b]0;owned\x07",
    "BEL": "ding\x07",
    "C1 CSI": "\x9b31mred",
    "C1 OSC": "\x9d8;;https://evil.example/\x9c",
    "CR (overwrite the line)": "https://cdn.example/a.jpg\rhttps://trusted.example/",
    "newline (a fake line)": "x\njob j1 completed: 0 failed",
    "backspace": "abc\x08\x08\x08xyz",
    "DEL": "a\x7fb",
    "bidi override (Trojan Source)": "https://example.com/\u202egpj.exe",
    "bidi isolate": "\u2066abc\u2069",
    "line separator": "a\u2028b",
}
#: Characters that must never reach the terminal as they are.
RAW = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                 "\u2028\u2029]")


def _hostile_job(text: str) -> dict:
    error = {"document_id": text, "url": text, "code": text, "message": text}
    return make_job("failed", failed=1, job_id="j1" + text, database="db" + text,
                    collection=text, document_id=text, message=text, errors=[error],
                    created_at=text, retry_of=text, filter={"name": text})


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_formatted_line_escapes_control_characters(text: str) -> None:
    job = _hostile_job(text)
    lines = [fmt.progress_line(job), fmt.final_line(job), *fmt.error_lines(job),
             *fmt.details(job), *fmt.plain_table([job]), *fmt.json_text(job).splitlines()]
    for line in lines:
        assert not RAW.search(line.replace("\t", "")), repr(line)
    # and the text is still there, legible: escaped, not dropped
    assert fmt.printable(text) in fmt.final_line(job)
    # a table cell never holds a tab of its own: `cut -f1` stays right
    assert fmt.plain_table([{**job, "job_id": "a\tb"}])[0].split("\t")[0] == "a\\tb"


def test_printable_spells_each_character() -> None:
    assert fmt.printable("\x1b[31m") == "\\x1b[31m"
    assert fmt.printable("\x9b\x07\r\n\t\x7f") == "\\x9b\\x07\\r\\n\\t\\x7f"
    assert fmt.printable("\u202egpj") == "\\u202egpj"
    assert fmt.printable("Café ✓ 東京 https://a.example/b?c=d") == "Café ✓ 東京 https://a.example/b?c=d"
    assert fmt.printable(None) == ""


def test_json_output_stays_valid_json_with_everything_escaped() -> None:
    job = _hostile_job("".join(HOSTILE.values()))
    text = fmt.json_text(job)
    assert not RAW.search(text.replace("\n", ""))
    assert json.loads(text) == job


class Api:
    """Answers GET /jobs/{id} with the next job of ``answers``."""

    def __init__(self, answers):
        self.answers = answers

    def get(self, path, **params):
        return next(self.answers)


def _interrupt(seconds: float) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_progress_bars_and_the_rich_table_print_no_sequence_of_the_server(text: str) -> None:
    # The bars: rich draws its own colours and cursor moves, but nothing of the server's
    # (interrupted while showing it: the bars' last frame is drawn on the way out)
    job = {**_hostile_job(text), "status": text}
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        follow(Api(iter([job])), "j1", out, terminal=True, sleep=_interrupt)
    _assert_only_rich_sequences(out.getvalue(), text)

    # The jobs table on a terminal
    out = io.StringIO()
    commands._print_rich_table({"jobs": [job], "total": text},
                               Console(file=out, force_terminal=True, width=400))
    _assert_only_rich_sequences(out.getvalue(), text)


def _assert_only_rich_sequences(output: str, text: str) -> None:
    # Rich's own styling is SGR (ESC [ … m) and cursor moves for the live bars; remove those,
    # then nothing else may be a control character: no OSC, no C1, no BEL, no bidi
    assert "\x1b]" not in output and "\x07" not in output
    stripped = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert not RAW.search(stripped.replace("\n", "").replace("\r", "")), repr(stripped)
    if "\x1b[31m" in text:
        assert "\\x1b[31m" in stripped  # the server's sequence, shown escaped (the table)


def test_markup_in_a_cell_is_shown_not_interpreted() -> None:
    out = io.StringIO()
    job = make_job(job_id="[link=https://evil.example/]j1[/link]")
    commands._print_rich_table({"jobs": [job], "total": 1},
                               Console(file=out, force_terminal=True, width=200))
    assert "\x1b]8" not in out.getvalue()
    assert "[link=https://evil.example/]j1[/link]" in out.getvalue()


def test_error_messages_from_the_server_are_escaped(monkeypatch, capsys) -> None:
    def handler(client, args):
        raise ApiClientError("404 job_not_found: job \x1b]0;owned\x07\x1b[2J not found")

    monkeypatch.setattr(commands.ClientSettings, "from_env", classmethod(
        lambda cls, env=None: cls()))
    assert commands.run(handler, SimpleNamespace()) == commands.EXIT_ERROR
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b]0;owned\\x07\\x1b[2J" in err
