"""The trash commands' pure parts: the listing's lines and the purge's confirmation."""

from __future__ import annotations

import io

import pytest

from images_service.client.commands import UsageError
from images_service.client.trash_commands import NotConfirmed, confirmed, trash_rows


class Stream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, text: str = "", *, tty: bool) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_rows_are_tab_separated_with_document_text_escaped():
    items = [{"folder": "h1-hotel", "document_id": "h1", "deleted_at": "2026-12-01T10:00:00Z",
              "images": 2},
             {"folder": "x\x1b[31m", "document_id": None, "deleted_at": None, "images": 0}]
    assert trash_rows(items) == ["h1-hotel\th1\t2026-12-01T10:00:00Z\t2",
                                 "x\\x1b[31m\t-\t-\t0"]


@pytest.mark.parametrize("answer, expected", [("y\n", True), ("YES\n", True), ("n\n", False),
                                              ("\n", False), ("", False), ("yep\n", False)])
def test_only_y_or_yes_confirms(answer, expected):
    stderr = Stream(tty=True)
    assert confirmed("Purge?", stdin=Stream(answer, tty=True), stderr=stderr) is expected
    assert stderr.getvalue() == "Purge? [y/N] "


@pytest.mark.parametrize("stdin_tty, stderr_tty", [(False, True), (True, False), (False, False)])
def test_without_a_terminal_it_refuses_without_reading(stdin_tty, stderr_tty):
    stdin = Stream("y\n", tty=stdin_tty)
    with pytest.raises(NotConfirmed) as refused:
        confirmed("Purge?", stdin=stdin, stderr=Stream(tty=stderr_tty))
    assert isinstance(refused.value, UsageError)  # exit status 2, like a usage error
    assert "--yes" in str(refused.value)
    assert stdin.tell() == 0  # nothing read: it never waits for an answer
