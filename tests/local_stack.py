"""`runplane local` as a subprocess, for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.contract import assert_reply, is_dialect

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(self, process: subprocess.Popen[str], state_dir: Path, banner: str):
        self.process, self.state_dir, self.banner = process, state_dir, banner
        self._registered: dict[str, str] = {}

    @property
    def info(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "local.json").read_text())

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        """A request to the API; a Roe AI or Cotool answer is checked against its transcribed schema."""
        headers = {"Authorization": f"Bearer {self.info['api_key']}", **kw.pop("headers", {})}
        reply = requests.request(
            method, self.info["api_url"] + path, json=body, headers=headers, timeout=60, **kw
        )
        if is_dialect(path):
            assert_reply(method, path, reply.status_code, reply.text)
        return reply

    def start_run(
        self, runnable: str, body: dict | None = None, mode: str = "async", **kw: Any
    ) -> requests.Response:
        return self.call("POST", f"/v1/runnable/{self.runnable(runnable)}/runs?mode={mode}", body or {}, **kw)

    def runnable(self, name: str) -> str:
        """The id of a seeded runnable, or of one registered here for the function `name`."""
        known = {**self.info["runnables"], **self._registered}
        if name not in known:
            spec = {"name": name, "kind": "python", "config": {"function": name}}
            known[name] = self._registered[name] = self.call("POST", "/v1/runnables", spec).json()["id"]
        return known[name]

    def wait_terminal(self, run_id: str, seconds: float = 30) -> dict[str, Any]:
        deadline, state = time.monotonic() + seconds, None
        while time.monotonic() < deadline:
            reply = self.call("GET", f"/v1/run/{run_id}")
            state = reply.json()
            if reply.status_code == 200 and state["status"] not in ("waiting", "running"):
                return state
            time.sleep(0.1)  # 404 too: a run from an intake message exists once the message is consumed
        raise AssertionError(f"run {run_id} not terminal after {seconds}s: {state}")

    def sqs(self) -> Any:
        info = self.info
        return boto3.client(
            "sqs",
            endpoint_url=info["aws_endpoint_url"],
            region_name=info["region"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def keep_draining_output(self) -> None:
        """Read the stack's output in the background so a full pipe never blocks it."""
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()  # type: ignore[union-attr]

    def read_until(self, text: str, seconds: float = 30) -> str:
        """What the stack prints from here until `text`, which it must print within `seconds`."""
        printed = read_banner(self.process.stdout.readline, seconds, until=text)  # type: ignore[union-attr]
        assert text in printed, printed
        return printed

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)  # it answers the requests in flight first, for up to 30 s


def wait_for(done: Callable[[], Any], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def stack_environment(**env: str) -> dict[str, str]:
    """This environment with `env` added, less its own AWS endpoint and credentials, with this checkout's
    runplane first (whichever one the environment has installed: a git worktree shares its venv)."""
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'functions'}", **env}
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        environment.pop(name, None)
    return environment


def stack_command(state_dir: Path, workers: int = 2, port: int | None = None) -> list[str]:
    """`runplane local` on a free port (unless given one)."""
    local = ["local", "--port", str(port or free_port()), "--workers", str(workers)]
    return [sys.executable, "-m", "runplane.cli", *local, "--state-dir", str(state_dir)]


def read_banner(read: Callable[[], str], seconds: float = 60, until: str = "Press Ctrl-C") -> str:
    """What the stack prints until `until` (by default the end of its banner, "Press Ctrl-C to stop."), it
    exits or `seconds` pass (checked between reads)."""
    seen, deadline = "", time.monotonic() + seconds
    while until not in seen and time.monotonic() < deadline:
        chunk = read()
        if not chunk:  # it exited
            break
        seen += chunk
    return seen


def start_stack(state_dir: Path, workers: int = 2, **env: str) -> Stack:
    """Start `runplane local` with `env` added to this environment; return once it serves."""
    environment = stack_environment(**env)
    for _ in range(3):  # a free port can be taken before the stack binds it (by another pytest worker)
        started = _start(state_dir, workers, environment)
        if isinstance(started, Stack):
            return started
        if "cannot listen on" not in started:
            break
    raise AssertionError("local stack did not start:\n" + started)


def _start(state_dir: Path, workers: int, environment: dict[str, str]) -> Stack | str:
    """The stack once it serves, or what it printed before it exited."""
    process = subprocess.Popen(
        stack_command(state_dir, workers),
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = read_banner(process.stdout.readline)  # type: ignore[union-attr]
    if "Press Ctrl-C" in printed:
        return Stack(process, state_dir, printed)
    process.kill()
    process.wait()
    return printed
