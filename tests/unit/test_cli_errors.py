"""The `runplane` admin commands, misconfigured as a newcomer would: each says in one line what is wrong
and exits non-zero, never with a traceback; a read command refuses an account that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from runplane.local.provision import provision

from tests.local_stack import free_port

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


def runplane(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runplane.cli", *args],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,  # no .runplane/ here
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
def moto_server() -> Iterator[dict[str, str]]:
    """A moto server with the deployment's tables and queues, as a real account would have them."""
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
        created = provision(session, "cli")
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL")
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous
    yield {**CREDENTIALS, **created, "AWS_ENDPOINT_URL": endpoint}
    server.stop()


def test_no_deployment_configured() -> None:
    one_line_error(runplane("keys", "create", "--account", "acme"), "no deployment configured", "--local")


def test_no_region() -> None:
    answer = runplane("keys", "list", "--account", "acme", RUNPLANE_KEYS_TABLE="keys")
    one_line_error(answer, "no AWS region")


def test_no_credentials() -> None:
    answer = runplane(
        "keys", "list", "--account", "acme", RUNPLANE_KEYS_TABLE="keys", AWS_DEFAULT_REGION="us-east-1"
    )
    one_line_error(answer, "no AWS credentials")


def test_an_endpoint_that_does_not_answer() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    answer = runplane(
        "keys",
        "create",
        "--account",
        "acme",
        RUNPLANE_KEYS_TABLE="keys",
        AWS_ENDPOINT_URL=endpoint,
        **CREDENTIALS,
    )
    one_line_error(answer, "cannot reach", endpoint)


def test_a_table_that_does_not_exist(moto_server: dict[str, str]) -> None:
    answer = runplane(
        "keys", "create", "--account", "acme", **{**moto_server, "RUNPLANE_KEYS_TABLE": "missing"}
    )
    one_line_error(answer, "was not found", "RUNPLANE_")


def test_a_missing_local_stack_says_how_to_start_one() -> None:
    answer = runplane("keys", "list", "--account", "acme", "--local", "--state-dir", "/nonexistent")
    one_line_error(answer, "start the local stack")


@pytest.mark.parametrize("command", [["accounts", "show"], ["keys", "list"]])
def test_a_read_command_refuses_an_unknown_account(moto_server: dict[str, str], command: list[str]) -> None:
    one_line_error(runplane(*command, "--account", "nobody", **moto_server), "Account nobody not found")


def test_a_known_account_is_shown(moto_server: dict[str, str]) -> None:
    created = runplane("keys", "create", "--account", "acme", **moto_server)
    assert created.returncode == 0, created.stderr
    shown = runplane("accounts", "show", "--account", "acme", **moto_server)
    assert shown.returncode == 0, shown.stderr
    assert '"account_id": "acme"' in shown.stdout
