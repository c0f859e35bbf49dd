"""A whole console stack for browser tests: the api on a real loopback HTTP server, a worker
subprocess, and a headless Debian Chromium driven by Playwright (one of each per module).

Playwright is the driver only: browsers cannot be downloaded here, so the system's
``/usr/bin/chromium`` is launched (``apt-get install chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis
from werkzeug.serving import BaseWSGIServer, make_server

from api import create_app
from images_service.config.settings import Settings, load_settings
from images_service.dev.embedded import free_port
from tests.support.backends import clear_but_claim
from tests.support.pipeline import KEY, WorkerProcess, api_client

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--no-proxy-server", "--disable-background-networking"]


@dataclass
class ConsoleStack:
    settings: Settings
    base_url: str
    worker: WorkerProcess
    screenshots: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def api(self):
        """A test client of the same app configuration, with the API key."""
        return api_client(self.settings)


def _serve(settings: Settings) -> tuple[BaseWSGIServer, threading.Thread]:
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="console-api", daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def console_stack(mongo_uri: str, redis_base_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    # Module-scoped: the function-scoped make_settings/redis_url would flush Redis under the
    # running worker. This module owns the test session's Redis DB while it runs.
    red = redis.Redis.from_url(redis_base_url)
    clear_but_claim(red)
    root = tmp_path_factory.mktemp("console")
    settings = replace(load_settings({
        "MONGODB_URI": mongo_uri, "REDIS_URL": redis_base_url, "API_KEY": KEY,
        "STORAGE_PATH": str(root / "images"), "JOBS_DATABASE": f"jobs_{uuid.uuid4().hex[:10]}",
        "ENVIRONMENT": "production", "ALLOW_PRIVATE_NETWORKS": "true",
        "API_RATE_LIMIT": "100000/minute", "RETRY_BACKOFF_MIN_MS": "50",
        "RETRY_BACKOFF_MAX_MS": "500",
    }))
    worker = WorkerProcess(settings, root / "worker.log", processes=1, threads=4).wait_ready()
    server, thread = _serve(settings)
    screenshots = root / "screenshots"
    screenshots.mkdir()
    try:
        yield ConsoleStack(settings, f"http://127.0.0.1:{server.server_port}", worker, screenshots)
    finally:
        server.shutdown()
        thread.join(10)
        try:
            worker.stop()
        finally:
            worker.kill()
        clear_but_claim(red)
        red.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


class PageProblems:
    """What a page reports that the console must never cause: Content-Security-Policy
    violations (Chromium logs each refused inline script, style or foreign resource on the
    console) and uncaught script errors."""

    def __init__(self, page) -> None:
        self.csp: list[str] = []
        self.script_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))

    def _console(self, message) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.csp.append(text)

    def assert_none(self) -> None:
        assert self.csp == [], self.csp
        assert self.script_errors == [], self.script_errors


def sign_in(page, stack: ConsoleStack, key: str = KEY) -> None:
    page.goto(stack.url("/ui/sign-in"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


#: The browser tests' window.
DESKTOP = {"width": 1000, "height": 700}


@pytest.fixture
def page(browser, console_stack):
    """A signed-in page at desktop size. Every page works under the console's
    Content-Security-Policy (contract §14): nothing it loads or runs is refused, and its
    script raises nothing (checked when the test ends)."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems = PageProblems(page)
    sign_in(page, console_stack)
    yield page
    context.close()
    problems.assert_none()


def shot(page, stack: ConsoleStack, name: str, docs_copy: Path | None = None) -> Path:
    """A screenshot of the whole page in the test's tmp dir (and a copy for the README)."""
    path = stack.screenshots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    # The README's screenshots are refreshed only on request, so a test run never rewrites
    # tracked files: UPDATE_DOCS_SCREENSHOTS=1 bash scripts/test.sh tests/integration/test_console_browser.py
    if docs_copy is not None and os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, docs_copy)
    return path


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)
