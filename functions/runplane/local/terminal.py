"""What the local stack prints to its terminal, a run's log lines among them."""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from functools import cache
from typing import Any, TextIO

from runplane.runnables.context import RunContext


def say(text: str, stream: TextIO | None = None) -> None:
    """Print, unless the terminal is gone (closed: EIO; a closed pipe: EPIPE): from then on the stream
    writes to /dev/null, so that nothing, not even Python's last flush, fails for it."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream, flush=True)
    except OSError:
        with suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def echo_log_line(context: RunContext, line: dict[str, Any]) -> None:
    """A line of a run's log as its worker receives it, each of its lines prefixed with the runnable's
    name and the run id's last 8 characters (a UUIDv7's first ones are its creation time, which runs
    started together share): `[echo 9c41d2ab] hello`. What the run wrote to stderr goes to stderr."""
    prefix = f"[{_name(context.account_id, context.runnable_id)} {context.run_id[-8:]}] "
    stream = sys.stderr if line.get("stream") == "stderr" else sys.stdout
    say("\n".join(prefix + text for text in str(line.get("message", "")).splitlines() or [""]), stream)


@cache
def _name(account_id: str, runnable_id: str) -> str:
    from runplane.logic.services import services

    try:
        runnable = services().runnables.get(account_id, runnable_id)
    except Exception:  # the line is printed all the same
        runnable = None
    return runnable.name if runnable is not None else runnable_id[-8:]
