"""The embedded local stack: moto server, provisioned resources, HTTP gateway, SQS pollers, sweeper."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from runplane import definitions as defs
from runplane.local.poller import STOP_SIGNALS
from runplane.local.terminal import say
from runplane.observability import LOG_LEVEL

LOCAL_ACCOUNT = "local"
REGION = "us-east-1"
BUILTIN_RUNNABLES = ("echo", "sleep", "fail")
LOCAL_IDS = uuid.UUID("6f1f5a52-8a3e-4c1b-9a57-2f1d3f0c7e11")  # the namespace of the built-ins' stable ids


@contextmanager
def stop_signals_to_the_main_thread() -> Iterator[None]:
    """Block SIGINT and SIGTERM while inside, in this thread and in every thread started meanwhile (a new
    thread inherits the mask, and so do the threads it starts), so that afterwards only the main thread
    can take them.

    The kernel gives a signal sent to the process to any thread that does not block it and gets to it
    first, and the servers start a thread per connection (creating one briefly changes the creating
    thread's signal mask, after which the kernel checks it for pending signals): such a thread can take
    a Ctrl-C meant for the main thread. Python runs the handler only once the main thread runs Python
    code again, and a main thread blocked in `Event.wait()` until the handler sets the event never does:
    the stop is lost.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class CannotStart(Exception):
    """The stack cannot start as asked (its state directory, its port): the message says why."""


def _holder(path: Path) -> str:
    """Who holds the state, as its local.json says (not yet written while that stack starts)."""
    try:
        held = json.loads(path.read_text())
        return f"pid {held['pid']}, {held['api_url']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "still starting"


class LocalStack:
    def __init__(
        self,
        *,
        port: int = 8787,
        host: str = "127.0.0.1",
        workers: int = 4,
        state_dir: Path = Path(".runplane"),
        sweep_seconds: float = 5.0,
    ):
        self.port, self.host, self.workers = port, host, workers
        self.state_dir, self.sweep_seconds = state_dir, sweep_seconds
        self.state_file = state_dir / "local.json"
        self.stopping = threading.Event()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.info: dict[str, Any] = {}
        self.gateway: Any = None
        self.moto: Any = None
        self._serving = False
        self._state_lock: IO[str] | None = None
        self._lock = threading.Lock()

    # --- start ---

    def start(self) -> dict[str, Any]:
        """Start everything and return what local.json lists; whatever had started is stopped if a part
        fails. A SIGINT or SIGTERM that arrives meanwhile is handled once the stack has started (see
        `stop_signals_to_the_main_thread`)."""
        with stop_signals_to_the_main_thread():
            self._claim_state()
            try:
                return self._start()
            except BaseException:
                self.stop()
                raise

    def _claim_state(self) -> None:
        """Lock the state directory for the stack's lifetime, so that a second stack there (it would
        overwrite this one's local.json, then delete it when it stops) is refused, even one started at
        the same moment. The kernel releases the lock of a stack that was killed: the local.json it
        left is then replaced, whatever it holds (its pid may be another process's by now)."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            lock = (self.state_dir / "local.lock").open("a")  # never deleted: the lock is on this file
        except OSError as error:
            raise CannotStart(f"cannot keep the state in {self.state_dir}: {error.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise CannotStart(
                f"a local stack already runs with the state in {self.state_file} "
                f"({_holder(self.state_file)}): stop it, or give this one its own --state-dir"
            ) from None
        self._state_lock = lock

    def _start(self) -> dict[str, Any]:
        from moto.server import ThreadedMotoServer

        from runplane.local import moto_atomic
        from runplane.local.gateway import Gateway

        moto_atomic.install()

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        try:  # before anything else starts: a taken port stops it early
            self.gateway = Gateway(self.host, self.port, self._app_factory())
        except OSError as error:
            raise CannotStart(
                f"cannot listen on {self.host}:{self.port}: {error.strerror} (use --port or RUNPLANE_PORT)"
            ) from None
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, moto_port = self.moto.get_host_and_port()
        env = self._environment(f"http://{host}:{moto_port}")
        if "RUNPLANE_PUBLIC_URL" not in os.environ:  # where async agents report: this gateway
            env["RUNPLANE_PUBLIC_URL"] = self.gateway.url
        os.environ.update(env)

        import boto3

        from runplane.local.provision import provision
        from runplane.logic import services

        env.update(provision(boto3.session.Session(), "runplane-local"))
        os.environ.update(env)
        services.reset()
        key, runnables = self._seed()
        threading.Thread(target=self.gateway.serve_forever, name="gateway", daemon=True).start()
        self._serving = True
        for name in self._poller_names():
            self._spawn(name, env)
        threading.Thread(target=self._supervise, args=(env,), name="supervisor", daemon=True).start()
        threading.Thread(target=self._sweep, name="sweeper", daemon=True).start()
        self.info = {
            "pid": os.getpid(),
            "api_url": self.gateway.url,
            "api_key": key.token,
            "key_id": key.key_id,
            "account_id": LOCAL_ACCOUNT,
            "organization_id": key.organization_id,
            "aws_endpoint_url": env["AWS_ENDPOINT_URL"],
            "region": REGION,
            "intake_queue_url": env[defs.INTAKE.env_var],
            "dispatch_queue_url": env[defs.DISPATCH.env_var],
            "intake_dlq_url": env[defs.INTAKE_DLQ.env_var],
            "dispatch_dlq_url": env[defs.DISPATCH_DLQ.env_var],
            "runnables": runnables,
            "env": env,
        }
        self._write_state()
        return self.info

    def _environment(self, endpoint: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_METRICS_DISABLED": "true",
            # as Lambda's advanced logging controls set it for the deployed functions
            "AWS_LAMBDA_LOG_LEVEL": os.environ.get("AWS_LAMBDA_LOG_LEVEL", LOG_LEVEL),
            "POWERTOOLS_SERVICE_NAME": "runplane-local",
            # one developer, one key: no per-key rate limit unless asked for
            "RUNPLANE_RATE_LIMIT_BURST": os.environ.get("RUNPLANE_RATE_LIMIT_BURST", "0"),
        }

    def _app_factory(self) -> Any:
        from runplane.api.app import create_app

        return create_app

    def _seed(self) -> tuple[Any, dict[str, str]]:
        """A dev API key and the built-in runnables for the local account."""
        from runplane.domain.models import RunnableFields
        from runplane.logic.keys import create_key
        from runplane.logic.runnables import create_runnable

        chosen = os.environ.get("RUNPLANE_LOCAL_KEY") or None
        key = create_key(LOCAL_ACCOUNT, name="local dev key", scopes=["admin"], token=chosen)
        runnables = {
            name: create_runnable(
                LOCAL_ACCOUNT,
                RunnableFields(name=name, kind="python", config={"function": name}),
                # with a chosen key, ids that follow from the names: scripts survive a restart
                str(uuid.uuid5(LOCAL_IDS, name)) if chosen else None,
            ).id
            for name in BUILTIN_RUNNABLES
        }
        return key, runnables

    def _poller_names(self) -> list[str]:
        names = []
        for function in defs.FUNCTIONS:
            if function.queue:
                copies = self.workers if function.name == "worker" else 1
                names += [f"{function.name}.{i}" for i in range(copies)]
        return names

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        function = name.split(".")[0]
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "runplane.local.poller", function],
            env={**os.environ, **env},
            start_new_session=True,  # Ctrl-C reaches the stack alone, which then stops every poller
        )

    def _supervise(self, env: dict[str, str]) -> None:
        """Restart a poller that died, as Lambda starts a new execution environment."""
        while not self.stopping.wait(0.5):
            restarted = False
            with self._lock:
                for name, process in list(self.processes.items()):
                    if process.poll() is not None and not self.stopping.is_set():
                        self._spawn(name, env)
                        restarted = True
            if restarted:
                try:
                    self._write_state()
                except CannotStart as error:  # the stack runs on; local.json names a gone worker
                    say(f"[stack] {error}", sys.stderr)

    def _sweep(self) -> None:
        from runplane.handlers.sweeper import lambda_handler
        from runplane.local.lambda_context import LocalLambdaContext

        while not self.stopping.wait(self.sweep_seconds):
            try:
                lambda_handler({}, LocalLambdaContext("sweeper", 60))
            except Exception as error:
                say(f"[sweeper] failed: {error!r}", sys.stderr)

    def _write_state(self) -> None:
        with self._lock:
            self.info["worker_pids"] = [p.pid for n, p in self.processes.items() if n.startswith("worker.")]
            temporary = self.state_file.with_suffix(".tmp")
            try:
                temporary.write_text(json.dumps(self.info, indent=2) + "\n")
                temporary.replace(self.state_file)
            except OSError as error:
                raise CannotStart(f"cannot write {self.state_file}: {error.strerror}") from None

    # --- stop ---

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Answer the requests in flight (`_drain`), then signal every poller and wait for them all
        against one deadline: a poller ends on the signal (runplane.local.poller.main), so the deadline
        only bounds one that does not; that one is killed.

        The signal goes to the poller's process group (it leads its own), so that it reaches the
        processes the poller forked for runs as well: one forked just before its worker ends may not
        yet have asked to die with it (runplane.runnables.supervise), and would run on, orphaned.
        """
        self.stopping.set()
        if self._serving:
            self._drain()
        if self.info:  # it had started
            self._say_what_is_lost()
        with self._lock:
            running = {name: p for name, p in self.processes.items() if p.poll() is None}
            for process in running.values():  # not reaped, so the group is still theirs
                _signal_group(process, signal.SIGTERM)
            deadline = time.monotonic() + grace_seconds
            for name, process in running.items():
                try:
                    process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    say(
                        f"[{name}] still running {grace_seconds:g}s after the stop signal: killed", sys.stderr
                    )
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
        if self._serving:
            self.gateway.stop()
        elif self.gateway:
            self.gateway.server.server_close()
        if self.moto:
            self.moto.stop()
        if self._state_lock:  # local.json is this stack's, or one a killed stack left
            with suppress(OSError):
                self.state_file.unlink(missing_ok=True)
            self._state_lock.close()  # releases the lock
            self._state_lock = None

    def _drain(self) -> None:
        """Refuse new requests (503), and let those in flight be answered first (a sync run's too: the
        pollers still run) for up to the api function's timeout, which bounds a request in AWS too; a
        second stop signal stops the wait."""
        seconds, hurry = defs.function("api").timeout_seconds, threading.Event()
        with _on_stop_signals(hurry.set):  # before the prompt to press Ctrl-C
            if not (count := self.gateway.in_flight.close()):
                return
            say(f"[stack] answering {_plural(count, 'request')} first, up to {seconds}s (Ctrl-C: stop now)")
            left = self.gateway.in_flight.wait(seconds, hurry)
        if left:
            say(f"[stack] {_plural(left, 'request')} cut short, unanswered", sys.stderr)

    def _say_what_is_lost(self) -> None:
        """The stack keeps its state in memory: say which runs had not ended, rather than lose them
        silently."""
        from runplane.domain.models import RunQuery
        from runplane.domain.states import Status
        from runplane.logic.services import services

        try:
            going, more = services().runs.list(
                LOCAL_ACCOUNT,
                RunQuery(statuses=frozenset({Status.waiting, Status.running})),
                limit=20,
                cursor=None,
            )
        except Exception as error:  # the stack stops all the same
            say(f"[stack] could not list the runs that had not ended: {error!r}", sys.stderr)
            return
        if going:
            count = f"{len(going)}{'+' if more else ''} run{'s' if len(going) > 1 or more else ''}"
            say(
                f"[stack] {count} had not ended and end with the stack (its state is in memory): "
                + ", ".join(f"{run.id} ({run.status.value})" for run in going)
            )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


@contextmanager
def _on_stop_signals(act: Callable[[], None]) -> Iterator[None]:
    """`act` on SIGINT, SIGTERM or SIGHUP while inside (a signal ignored stays ignored); off the main
    thread, which alone may set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: h for s in STOP_SIGNALS if (h := signal.getsignal(s)) not in (signal.SIG_IGN, None)}
    for signum in before:
        signal.signal(signum, lambda *_: act())
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):  # gone, and everything it started with it
        os.killpg(process.pid, signum)


def banner(info: dict[str, Any], state_file: Path) -> str:
    url, key = info["api_url"], info["api_key"]
    echo = info["runnables"]["echo"]
    return f"""Runplane local stack is up.

  API           {url}   (OpenAPI: {url}/openapi.json, docs: {url}/docs)
  API key       {key}
  account       {info["account_id"]} (organization id {info["organization_id"]})
  AWS endpoint  {info["aws_endpoint_url"]} (moto; region {info["region"]})
  intake queue  {info["intake_queue_url"]}
  runnables     {", ".join(f"{n}={i}" for n, i in info["runnables"].items())}
  written to    {state_file}

Try a synchronous run of the built-in echo runnable:

  curl -s -X POST '{url}/v1/runnable/{echo}/runs?mode=sync' \\
    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"inputs": {{"hello": "world"}}}}'

The same run in Roe AI's and Cotool's dialects (docs/dialects.md):
  POST {url}/v1/agents/run/{echo}/        body {{"hello": "world"}}
  POST {url}/api/agents/{echo}/run-sync   body {{"inputs": {{"hello": "world"}}}}

Press Ctrl-C to stop.
"""
