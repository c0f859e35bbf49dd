"""The README's tour, run as a newcomer would run it (issue 23).

Every shell block of README.md preceded by ``<!-- tested -->`` is run, in order, in one bash
session, against a dev stack started from the block marked ``<!-- tested: dev stack -->``
(its variables and arguments, not a copy of them). Ports the README names (8001 for the api,
8099 for the tour's image host, 27017 for MongoDB) are replaced by free ones, and the session
runs in a directory that looks like a checkout (``.venv`` linked), so ``data/…`` paths and
``. .venv/bin/activate`` mean what they mean to a reader.

A comment line ``# …`` in a block is the output the reader is told to expect: it must appear
in what that block printed (``…`` stands for anything). So the README cannot drift from the
service without this test failing.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import (
    REPO,
    free_ports,
    kill_group,
    service_command,
    spawn,
    terminate_and_wait,
    wait_http_json,
)

BLOCK = re.compile(r"<!-- tested(?:: (?P<what>[^>]*?))? -->\n```bash\n(?P<body>.*?)```", re.S)
MARK = "@@readme-block-{}@@"


def readme_blocks(readme: str) -> tuple[str, list[str]]:
    """The dev stack's start line and the tested blocks after it, in README order."""
    start, blocks = None, []
    for match in BLOCK.finditer(readme):
        if match.group("what") == "dev stack":
            start = match.group("body").strip()
        else:
            blocks.append(match.group("body"))
    assert start is not None, "the README's tour has no block marked <!-- tested: dev stack -->"
    return start, blocks


def start_command(line: str) -> tuple[dict[str, str], list[str]]:
    """``VAR=value … bash scripts/dev.sh ARGS`` → (variables, ARGS)."""
    words = shlex.split(line)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[:2] == ["bash", "scripts/dev.sh"], line
    return env, words[2:]


def expected_lines(block: str) -> list[re.Pattern[str]]:
    """The ``# output`` lines of a block, as patterns (``…`` matches anything)."""
    patterns = []
    for line in block.splitlines():
        if line.startswith("# "):
            parts = [re.escape(part) for part in line[2:].split("…")]
            patterns.append(re.compile(".*?".join(parts)))
    return patterns


def test_tested_blocks_are_found_and_their_outputs_read() -> None:
    # The parser itself: a start block, two tested blocks, an untested one in between
    readme = ("<!-- tested: dev stack -->\n```bash\nA=1 B='x y' bash scripts/dev.sh --z\n```\n"
              "<!-- tested -->\n```bash\necho hi\n# hi\n```\n```bash\nnot run\n```\n"
              "<!-- tested -->\n```bash\necho '{\"id\":\"5\"}'\n# {\"id\":\"…\"}\n```\n")
    start, blocks = readme_blocks(readme)
    assert start_command(start) == ({"A": "1", "B": "x y"}, ["--z"])
    assert blocks == ["echo hi\n# hi\n", "echo '{\"id\":\"5\"}'\n# {\"id\":\"…\"}\n"]
    assert expected_lines(blocks[1])[0].search('{"id":"5"}')
    assert not expected_lines(blocks[1])[0].search('{"job":"5"}')


@pytest.mark.timeout(300)
def test_the_readme_tour_runs_as_written(tmp_path: Path, redis_url: str) -> None:
    start, blocks = readme_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 5, "the tour has lost its tested blocks"
    variables, args = start_command(start)
    api, mongo, image_host, worker_metrics, listener_metrics = free_ports(5)
    # Given a directory that looks like a checkout, and the dev stack started as the README says
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {**variables, "PORT": str(api), "MONGODB_URI": f"mongodb://127.0.0.1:{mongo}",
           "REDIS_URL": redis_url, "API_KEY": "", "API_KEYS": "", "WORKER_PROCESSES": "1",
           "WORKER_THREADS": "4", "API_WORKERS": "1", "WORKER_METRICS_PORT": str(worker_metrics),
           "LISTENER_METRICS_PORT": str(listener_metrics)}
    stack = spawn(service_command("dev", *args), env, tmp_path, tmp_path / "dev.log")
    tour = None
    try:
        wait_http_json(f"http://127.0.0.1:{api}/api/v1/health", 90, proc=stack)
        # When the tested blocks run in one shell, with the ports the stack really has
        script = ["set -euo pipefail"]
        for number, block in enumerate(blocks):
            for port in ("8001", "8099", "27017"):
                block = block.replace(port, {"8001": str(api), "8099": str(image_host),
                                             "27017": str(mongo)}[port])
            script += [f"echo {MARK.format(number)}", block]
        shell_env = {key: value for key, value in os.environ.items()
                     if key not in ("API_KEY", "API_KEYS", "IMAGES_SERVICE_URL", "VIRTUAL_ENV")}
        shell_env["PYTHONPATH"] = str(REPO)  # the checkout's code, as the stack runs it
        tour = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=shell_env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        output, _ = tour.communicate(timeout=240)
        (tmp_path / "tour.log").write_text(output)  # what a reader would have seen
        # Then every block ran to the end, and printed what the README says it prints
        assert tour.returncode == 0, output[-6000:]
        pieces = re.split(r"@@readme-block-(\d+)@@\n", output)
        printed = {int(pieces[i]): pieces[i + 1] for i in range(1, len(pieces) - 1, 2)}
        assert sorted(printed) == list(range(len(blocks))), output[-3000:]
        for number, block in enumerate(blocks):
            for pattern in expected_lines(block):
                assert pattern.search(printed[number]), (
                    f"README block {number + 1} promises {pattern.pattern!r}; it printed:\n"
                    f"{printed[number][-3000:]}")
        # And the stack stops as the tour's last step says: exit 0, one line per process
        code, _ = terminate_and_wait(stack, 60)
        assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
        assert "Traceback" not in (tmp_path / "dev.log").read_text()
    finally:
        if tour is not None and tour.poll() is None:
            tour.kill()
        if tour is not None:
            try:
                os.killpg(tour.pid, signal.SIGKILL)  # the tour's image host (`… &`)
            except ProcessLookupError:
                pass
        kill_group(stack)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_readme_and_docs_resolves_inside_the_repository() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    anchors = {page: {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", page.read_text(), re.M)}
               for page in pages}
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a URL (http://127.0.0.1:8001/ui/ in the tour)
            path = (page.parent / target).resolve() if target else page
            if REPO.resolve() not in path.parents and path != REPO.resolve():
                broken.append(f"{page.name}: {target} is outside the repository")
            elif not path.exists():
                broken.append(f"{page.name}: {target} does not exist")
            elif anchor and path.suffix == ".md" and anchor not in anchors.get(path, set()):
                broken.append(f"{page.name}: #{anchor} is not a heading of {path.name}")
    assert not broken, "\n".join(broken)
