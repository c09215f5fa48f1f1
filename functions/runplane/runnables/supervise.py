"""Execute one run's code under a time limit, a lease and cancellation.

Python runnables run in a forked child process: it can be killed, which makes `timeout_seconds` and
cancellation real, and a crash in it (even os._exit or a segfault) cannot take the worker down. Kinds that
only wait on I/O (http, lambda, bedrock) run in a thread; at the deadline or on cancellation the worker
stops waiting for them and their late answer is dropped. Either way the code reports through a pipe:
usage, metadata and progress (state, partial outputs, log lines: everything an isolated child writes to
stdout and stderr too) as it goes, questions for the worker (`answer` replies: the code itself never
calls AWS), then its outputs or its error. While it works, the worker calls `on_heartbeat` every
`heartbeat_seconds` to renew its lease, and sooner when progress is due to be written.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Protocol

from runplane.domain.documents import MAX_DEPTH, too_deep
from runplane.domain.models import ModelUsage, Outcome, RunError
from runplane.domain.states import ErrorCode, Status
from runplane.runnables.context import RunContext, RunFailed

Code = Callable[[RunContext], dict[str, Any]]
Answerer = Callable[[str, dict[str, Any]], dict[str, Any]]


class ProgressSink(Protocol):
    """Where the worker keeps progress until the next heartbeat writes it."""

    def report(self, kind: str, payload: Any) -> None: ...

    def due(self) -> float | None: ...  # monotonic time a heartbeat should write it; None: nothing waits


PROGRESS = frozenset({"state", "outputs", "log"})
# called with each log line a run reports, besides `progress`; local mode sets it to echo the lines to
# the stack's terminal (runplane.local.poller), deployed workers leave it unset
echo_log: Callable[[RunContext, dict[str, Any]], None] | None = None
MIN_BEAT_SECONDS = 0.25  # between two heartbeats, whatever is due


class Verdict(Enum):
    """What a heartbeat tells the executor."""

    go_on = "go_on"
    unsure = "unsure"  # the renewal failed (a transient error) but the lease still holds: try again soon
    cancel = "cancel"  # the run's owner asked for cancellation
    lost = "lost"  # this worker no longer holds the run: stop, record nothing


@dataclass
class Limits:
    seconds: float
    reason: str  # the error message of a run that runs out of time
    heartbeat_seconds: float
    cancel_grace_seconds: float = 0.0  # how long cancelled code may take to return (isolated code only)
    retry_seconds: float = 1.0  # how soon a renewal that failed is tried again


@dataclass
class _Reports:
    started: float = field(default_factory=time.monotonic)
    usage: list[ModelUsage] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def outcome(self, status: Status, **fields: Any) -> Outcome:
        return Outcome(
            status=status,
            usage=self.usage,
            metadata=self.metadata or None,
            duration_seconds=round(time.monotonic() - self.started, 3),
            **fields,
        )


def supervise(
    code: Code,
    context: RunContext,
    *,
    isolated: bool,
    limits: Limits,
    on_heartbeat: Callable[[], Verdict],
    answer: Answerer,
    progress: ProgressSink,
) -> Outcome | None:
    """Run `code(context)`; None when the lease was lost and nothing may be recorded."""
    reports_in, reports_out = multiprocessing.Pipe(duplex=False)
    answers_in, answers_out = multiprocessing.Pipe(duplex=False)
    cancel_in, cancel_out = multiprocessing.Pipe(duplex=False)
    ends = (reports_out, answers_in, cancel_in)
    # a pipe, not a multiprocessing.Event: Lambda has no /dev/shm for the semaphore an Event needs
    context.cancel_flag = _PipeFlag(cancel_in)
    if isolated:
        runner: Any = multiprocessing.get_context("fork").Process(
            target=_child, args=(*ends, code, context, True), daemon=True
        )
    else:
        runner = threading.Thread(target=_child, args=(*ends, code, context, False), daemon=True)
    reports = _Reports()
    try:
        runner.start()
        if isolated:
            for end in ends:
                end.close()
        echo = None if echo_log is None else partial(echo_log, context)
        watch = _Watch(runner, limits, on_heartbeat, answer, progress, reports, echo)
        return watch(reports_in, answers_out, cancel_out)
    finally:
        for end in (reports_in, answers_out, cancel_out):
            end.close()
        if isolated and runner.pid is not None:
            if runner.is_alive():
                runner.kill()
            runner.join(5)


class _PipeFlag:
    """Set once the worker writes to the pipe (cancellation): readable from a thread or a forked child."""

    def __init__(self, pipe: Connection):
        self._pipe = pipe
        self._set = False

    def is_set(self) -> bool:
        if not self._set:
            try:
                self._set = self._pipe.poll()
            except OSError:  # the worker closed it: the run is over either way
                self._set = True
        return self._set


@dataclass
class _Watch:
    runner: Any
    limits: Limits
    on_heartbeat: Callable[[], Verdict]
    answer: Answerer
    progress: ProgressSink
    reports: _Reports
    echo: Callable[[dict[str, Any]], None] | None

    def __call__(self, pipe: Connection, answers: Connection, cancel: Connection) -> Outcome | None:
        limits, reports = self.limits, self.reports
        deadline = reports.started + limits.seconds
        next_beat = reports.started + limits.heartbeat_seconds
        last_beat = reports.started
        cancelled_until: float | None = None  # while cancelled code may still return
        cancelled = RunError(message="Run was cancelled on request", code=ErrorCode.cancelled)
        while True:
            now = time.monotonic()
            if cancelled_until is not None and now >= cancelled_until:
                return reports.outcome(Status.cancelled, error=cancelled)
            if now >= deadline:
                error = RunError(message=limits.reason, code=ErrorCode.timeout)
                return reports.outcome(Status.timeout, error=error)
            # progress may call for a heartbeat before it is due, but never in a loop (a write that keeps
            # failing leaves its progress due)
            due = self.progress.due()
            soonest = last_beat + min(MIN_BEAT_SECONDS, limits.heartbeat_seconds)
            beat = max(next_beat if due is None else min(next_beat, due), soonest)
            if now >= beat:
                last_beat = now
                verdict = self.on_heartbeat()
                pause = limits.retry_seconds if verdict is Verdict.unsure else limits.heartbeat_seconds
                next_beat = time.monotonic() + pause
                if verdict is Verdict.lost:
                    return None
                if verdict is Verdict.cancel and cancelled_until is None:
                    cancel.send(True)
                    cancelled_until = now + limits.cancel_grace_seconds
                continue
            wake = min(deadline, beat, cancelled_until or deadline)
            if not pipe.poll(max(0.0, wake - now)):
                continue
            try:
                kind, payload = pipe.recv()
            except EOFError:
                self.runner.join(1)
                error = RunError(
                    message="The runnable's process exited without a result"
                    f" (exit code {self.runner.exitcode})",
                    code=ErrorCode.runnable_crashed,
                )
                return reports.outcome(Status.failed, error=error)
            if kind == "ask":
                answers.send(self.answer(*payload))
            elif kind in PROGRESS:
                self.progress.report(kind, payload)
                if kind == "log" and self.echo is not None:
                    self.echo(payload)
            elif kind == "usage":
                reports.usage.append(ModelUsage(**payload))
            elif kind == "metadata":
                reports.metadata.update(payload)
            elif cancelled_until is not None:  # what cancelled code returned is kept, the run is cancelled
                outputs = json.loads(payload) if kind == "ok" else None
                return reports.outcome(Status.cancelled, outputs=outputs, error=cancelled)
            elif kind == "ok":
                return reports.outcome(Status.completed, outputs=json.loads(payload))
            else:
                return reports.outcome(Status.failed, error=RunError(**payload))


class _InvalidOutput(Exception):
    pass


def _child(
    conn: Connection, answers: Connection, cancel: Connection, code: Code, context: RunContext, isolated: bool
) -> None:
    if isolated:
        _die_with_parent()
    sending = threading.Lock()  # the code and the threads forwarding its output share the pipe

    def send(kind: str, payload: Any) -> None:
        with sending, contextlib.suppress(OSError):  # the worker stopped waiting (deadline, cancellation)
            conn.send((kind, payload))

    def ask(question: str, payload: dict[str, Any]) -> dict[str, Any]:
        with sending:
            conn.send(("ask", (question, payload)))
        return answers.recv()

    context.send = send
    context.ask = ask
    stop_capture = _capture_output(send) if isolated else None
    stack = None
    try:
        message: tuple[str, Any] = ("ok", _serialize(code(context)))
    except RunFailed as failure:
        message = ("error", {"message": failure.message, "code": failure.code})
    except _InvalidOutput as problem:
        message = ("error", {"message": str(problem), "code": ErrorCode.invalid_output})
    except Exception as problem:
        stack = _traceback(problem)
        last_line = "".join(traceback.format_exception_only(problem)).strip()
        message = ("error", {"message": last_line, "code": ErrorCode.runnable_exception})
    if stop_capture is not None:
        stop_capture()  # what was printed comes first
    if stack is not None:
        send("log", {"stream": "stderr", "message": stack, "at": time.time()})
    send(*message)
    for end in (conn, answers, cancel):
        end.close()


_OWN_FILES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the runplane package


def _traceback(problem: BaseException) -> str:
    """The exception's traceback from the runnable's own code on (the frames that called it are ours)."""
    frames = problem.__traceback__
    while frames is not None and frames.tb_next is not None:
        if not frames.tb_frame.f_code.co_filename.startswith(_OWN_FILES):
            break
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(problem), problem, frames)).rstrip()


def _capture_output(send: Callable[[str, Any], None]) -> Callable[[], None]:
    """Send what this process writes to its stdout and stderr (file descriptors 1 and 2, so subprocesses
    and C code too) as log lines. Returns the function that flushes and stops it."""
    forwarders = []
    for stream, number in (("stdout", 1), ("stderr", 2)):
        with contextlib.suppress(ValueError, OSError):
            getattr(sys, stream).flush()
        read_end, write_end = os.pipe()
        os.dup2(write_end, number)
        os.close(write_end)
        # whatever sys.stdout was (a test runner's capture, say), `print` now writes to the pipe, a line
        # at a time
        writer = open(number, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        setattr(sys, stream, writer)
        forwarder = threading.Thread(target=_forward, args=(read_end, stream, send), daemon=True)
        forwarder.start()
        forwarders.append(forwarder)

    def stop() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(ValueError, OSError):
                stream.flush()
        nowhere = os.open(os.devnull, os.O_WRONLY)
        for number in (1, 2):
            os.dup2(nowhere, number)  # the pipes' last write ends close: the forwarders read to the end
        os.close(nowhere)
        for forwarder in forwarders:
            forwarder.join(2)

    return stop


MAX_READ = 64 * 1024  # one read of a line that never ends


def _forward(fd: int, stream: str, send: Callable[[str, Any], None]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while line := pipe.readline(MAX_READ):
            message = line.decode(errors="replace").rstrip("\r\n")
            send("log", {"stream": stream, "message": message, "at": time.time()})


def _serialize(outputs: object) -> str:
    if not isinstance(outputs, dict):
        raise _InvalidOutput(f"a runnable must return a dict of outputs, not {type(outputs).__name__}")
    if too_deep(outputs):
        raise _InvalidOutput(f"outputs nest deeper than {MAX_DEPTH} levels")
    try:
        return json.dumps(outputs, allow_nan=False)
    except (TypeError, ValueError) as problem:
        raise _InvalidOutput(f"outputs are not JSON: {problem}") from None


def _die_with_parent() -> None:
    """Linux: have the kernel kill this child if the worker dies, so no orphaned run keeps going."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the worker died before the setting took
        os._exit(1)
