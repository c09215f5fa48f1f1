"""The browser suite's fixtures: one local stack and one Chromium per module (the system's, from apt:
Playwright's own download is never used), a fresh browser context per test that records every request
and console message, and screenshots under .artifacts/console/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.local_stack import Stack, start_stack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}
STACK_ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_ALLOW_LOOPBACK": "1",  # callbacks to a closed port on this machine
    "RUNPLANE_CALLBACK_SCHEDULE": "0.2",  # two attempts, then dead
    "RUNPLANE_LEASE_SECONDS": "3",  # a worker sees a cancellation within a second
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), **STACK_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():  # a failure, not a skip: .ci/run installs it
        pytest.fail("the console's browser tests drive Debian's Chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@dataclass
class Console:
    """A signed-out tab on the stack's console, with what it requested and logged."""

    page: Any
    stack: Stack
    requests: list[Any] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.stack.info["api_url"] + "/console/"

    @property
    def key(self) -> str:
        return self.stack.info["api_key"]

    def open(self, fragment: str = "") -> Any:
        return self.page.goto(self.base + fragment)

    def sign_in(self, fragment: str = "") -> None:
        self.open(fragment)
        self.page.fill("#key", self.key)
        self.page.press("#key", "Enter")
        self.page.wait_for_selector("#who-account")

    def go(self, fragment: str) -> None:
        """Another page of the signed-in console (the hash changes; the tab stays)."""
        self.page.evaluate("(hash) => { location.hash = hash; }", fragment)

    def shot(self, name: str, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def console(browser: Any, stack: Stack) -> Iterator[Console]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    tab = Console(page, stack)
    context.on("request", lambda request: tab.requests.append(request))
    page.on("console", lambda message: tab.messages.append(message.text))
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    context.close()
    assert tab.errors == []  # no script error on any page


def start(stack: Stack, runnable: str, inputs: dict[str, Any] | None = None, **body: Any) -> str:
    reply = stack.start_run(runnable, {"inputs": inputs or {}, **body})
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def ended(stack: Stack, *run_ids: str) -> list[dict[str, Any]]:
    return [stack.wait_terminal(run_id) for run_id in run_ids]


def eventually(check: Any, seconds: float = 15) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return value
