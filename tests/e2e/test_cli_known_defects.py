"""Known defects of the CLI's one-line errors, `known_account` and the local stack's SIGHUP handling and
state claim (issue 21): each test shows one and fails until it is fixed (its docstring says what breaks);
strict xfail, so a fix that makes one pass must move it among the other tests."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer
from runplane.local.provision import provision

from tests.local_stack import ROOT, free_port, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.xfail(strict=True, reason="known defect, not fixed yet")]

CLEAN = {  # nothing of the developer's own AWS set-up reaches the command
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def runplane(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runplane.cli", *args],
        env={**CLEAN, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'functions'}", **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or Path(__file__).parent,
    )


def one_line_error(answer: subprocess.CompletedProcess[str], *words: str) -> None:
    assert answer.returncode != 0, answer.stdout
    assert "Traceback" not in answer.stderr, answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def moto_server() -> Iterator[tuple[dict[str, str], boto3.session.Session]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        created = provision(session, "review")
        provision(session, "runplane")  # the settings' default names: runplane-api-keys, ...
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL")
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous
    yield {**CREDENTIALS, **created, "AWS_ENDPOINT_URL": endpoint}, session
    server.stop()


# --- tracebacks the CLI still prints ---


def test_an_unknown_aws_profile_is_one_line() -> None:
    """AWS_PROFILE naming a profile that does not exist (a typo, the commonest misconfiguration after no
    credentials): botocore.exceptions.ProfileNotFound is not handled by cli.unreachable, so a traceback."""
    answer = runplane("keys", "list", "--account", "acme", RUNPLANE_KEYS_TABLE="keys", AWS_PROFILE="nope")
    one_line_error(answer, "nope")


def test_a_malformed_endpoint_url_is_one_line() -> None:
    """AWS_ENDPOINT_URL without a scheme (localhost:4566): boto3 raises a plain ValueError('Invalid
    endpoint'), which cli.main re-raises: a traceback."""
    answer = runplane(
        "keys",
        "list",
        "--account",
        "acme",
        RUNPLANE_KEYS_TABLE="keys",
        AWS_ENDPOINT_URL="localhost:4566",
        **CREDENTIALS,
    )
    one_line_error(answer, "localhost:4566")


@pytest.fixture
def closing_server() -> Iterator[str]:
    """An endpoint that accepts connections and closes them at once (a proxy or load balancer dropping
    them)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)

    def close_each() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=close_each, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_connection_closed_by_the_endpoint_is_one_line(closing_server: str) -> None:
    """botocore's ConnectionClosedError (and ReadTimeoutError: both HTTPClientError, not
    EndpointConnectionError) is not in cli.unreachable: a traceback."""
    answer = runplane(
        "keys",
        "list",
        "--account",
        "acme",
        RUNPLANE_KEYS_TABLE="keys",
        AWS_ENDPOINT_URL=closing_server,
        **CREDENTIALS,
    )
    one_line_error(answer, "127.0.0.1")


def test_an_https_endpoint_that_answers_plain_http_is_one_line(
    moto_server: tuple[dict[str, str], object],
) -> None:
    """https:// to a plain-HTTP endpoint (or a corporate TLS proxy): botocore.exceptions.SSLError is a
    ConnectionError but not an EndpointConnectionError: a traceback."""
    env, _ = moto_server
    https = env["AWS_ENDPOINT_URL"].replace("http://", "https://")
    answer = runplane("keys", "list", "--account", "acme", **{**env, "AWS_ENDPOINT_URL": https})
    one_line_error(answer, https.removesuffix("/"))


def test_an_invalid_runplane_setting_is_one_line(moto_server: tuple[dict[str, str], object]) -> None:
    """A RUNPLANE_* variable the settings refuse (copied from a function's environment, mistyped):
    pydantic's ValidationError from get_settings() is neither a RunplaneError nor an AWS error: a
    traceback of 10 lines."""
    env, _ = moto_server
    answer = runplane("keys", "list", "--account", "acme", **{**env, "RUNPLANE_KEY_CACHE_SECONDS": "1m"})
    one_line_error(answer, "RUNPLANE_KEY_CACHE_SECONDS")


@pytest.mark.parametrize("content", ["{not json", '{"pid": 1}', "[]"])
def test_a_corrupt_local_json_is_one_line(tmp_path: Path, content: str) -> None:
    """cli._use_local reads local.json unguarded: a file cut short (disk full, a stack killed while
    writing a hand-edited one), or one without `env`, is a JSONDecodeError / KeyError / TypeError
    traceback."""
    (tmp_path / "local.json").write_text(content)
    answer = runplane("keys", "list", "--account", "acme", "--local", "--state-dir", str(tmp_path))
    one_line_error(answer, "local.json")


# --- the pre-check and known_account ---


def test_a_deployment_with_the_default_names_is_not_refused(
    moto_server: tuple[dict[str, str], object],
) -> None:
    """Settings default to runplane-api-keys, runplane-accounts, ...: resources with those names were
    reachable with no RUNPLANE_* variable before 948d787; the pre-check now says 'no deployment
    configured' without trying."""
    env, _ = moto_server
    answer = runplane(
        "keys", "create", "--account", "acme", **CREDENTIALS, AWS_ENDPOINT_URL=env["AWS_ENDPOINT_URL"]
    )
    assert answer.returncode == 0, answer.stderr


def test_keys_list_of_an_account_whose_keys_predate_account_items(
    moto_server: tuple[dict[str, str], boto3.session.Session],
) -> None:
    """An account with keys but no item in the accounts table (keys made before accounts were opened:
    keys.principal_of still opens one when such a key authenticates) is a real account; known_account
    refuses it ('Account legacy not found'), so the operator cannot list its keys (to revoke them) nor
    show it (describe_account used to open it)."""
    env, session = moto_server
    session.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"]).put_item(
        TableName=env["RUNPLANE_KEYS_TABLE"],
        Item={
            "id": {"S": "0123456789abcdef"},
            "account_id": {"S": "legacy"},
            "secret_hash": {"S": "0" * 64},
            "scopes": {"L": [{"S": "admin"}]},
            "created_at": {"S": "2024-01-01T00:00:00+00:00"},
        },
    )
    answer = runplane("keys", "list", "--account", "legacy", **env)
    assert answer.returncode == 0, answer.stderr
    assert "0123456789abcdef" in answer.stdout


# --- the local stack: SIGHUP and the state claim ---

STACK_ENV = {"RUNPLANE_LOCAL_SWEEP_SECONDS": "5"}


def _stack_environment() -> dict[str, str]:
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'functions'}", **STACK_ENV}
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        environment.pop(name, None)
    return environment


def _stack_command(state_dir: Path, port: int | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runplane.cli",
        "local",
        "--port",
        str(port or free_port()),
        "--workers",
        "1",
        "--state-dir",
        str(state_dir),
    ]


def _wait_for_banner(read: callable, seconds: float = 60) -> str:  # type: ignore[valid-type]
    seen, deadline = "", time.monotonic() + seconds
    while "Press Ctrl-C" not in seen:
        assert time.monotonic() < deadline, seen
        chunk = read()
        if not chunk:
            break
        seen += chunk
    return seen


def test_a_hangup_after_the_terminal_closed_still_stops_the_stack_cleanly(tmp_path: Path) -> None:
    """SIGHUP comes when the terminal closes, and then the terminal is gone: cmd_local's
    `print("stopping…", flush=True)` raises OSError (EIO) before `stack.stop()`, so the stack exits 1
    with a traceback, its local.json left behind, and the pollers are never stopped (they die later,
    on their own, when they find moto gone); nor is what had not ended named."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        _stack_command(tmp_path),
        cwd=ROOT,
        env=_stack_environment(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        _wait_for_banner(lambda: os.read(master, 65536).decode(errors="replace"))
    finally:
        os.close(master)  # the terminal window closes
    time.sleep(0.5)
    process.send_signal(signal.SIGHUP)
    try:
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not (tmp_path / "local.json").exists()


def test_a_stack_started_with_nohup_survives_a_hangup(tmp_path: Path) -> None:
    """`nohup runplane local &` (or `nohup make run`) asks for SIGHUP to be ignored; cmd_local replaces
    the inherited SIG_IGN with its stop handler, so logging out stops the stack nohup was meant to keep.
    A handler should be installed for SIGHUP only when it is not ignored."""
    process = subprocess.Popen(
        ["nohup", *_stack_command(tmp_path)],
        cwd=ROOT,
        env=_stack_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_banner(process.stdout.readline)  # type: ignore[union-attr]
        process.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert process.poll() is None, "the stack stopped on SIGHUP under nohup"
        url = json.loads((tmp_path / "local.json").read_text())["api_url"]
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_state_file_whose_pid_was_reused_is_replaced(tmp_path: Path) -> None:
    """A stack killed with SIGKILL (or a reboot, or a container restart) leaves local.json; once its pid
    belongs to another process, _claim_state's `os.kill(pid, 0)` (PermissionError counts as alive too)
    refuses every new stack there, 'a local stack already runs', though none does. Here the pid is this
    test process's."""
    (tmp_path / "local.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://gone"}))
    stack = start_stack(tmp_path, workers=1, **STACK_ENV)
    assert stack.stop() == 0


def test_two_stacks_started_at_once_on_one_state_dir_do_not_both_run(tmp_path: Path) -> None:
    """_claim_state checks local.json at the start, but the stack writes it only once it has started
    (moto, provisioning, seeding, pollers: seconds later): two stacks started together on the same
    --state-dir (other ports) both pass the check and both run, the second overwriting the first's
    local.json."""
    environment = _stack_environment()
    processes = [
        subprocess.Popen(
            _stack_command(tmp_path),
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = []
        for process in processes:
            outputs.append(_wait_for_banner(process.stdout.readline))  # type: ignore[union-attr]
        running = [p for p, out in zip(processes, outputs, strict=True) if "Press Ctrl-C" in out]
        assert len(running) == 1, outputs
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_state_dir_that_cannot_be_written_is_not_reported_as_a_port_in_use(tmp_path: Path) -> None:
    """--state-dir naming a file (or a directory this user cannot write): _write_state's OSError, raised
    after the pollers were spawned, reaches cmd_local's `except OSError`, which says 'cannot listen on
    127.0.0.1:<port>: File exists (use --port or RUNPLANE_PORT)' and exits without stopping the stack."""
    state = tmp_path / "a-file"
    state.write_text("")
    answer = subprocess.run(
        _stack_command(state),
        cwd=ROOT,
        env=_stack_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode != 0
    assert "cannot listen" not in answer.stderr, answer.stderr
    assert str(state) in answer.stderr, answer.stderr
