"""The `runplane` admin commands, misconfigured as a newcomer would: each says in one line what is wrong
and exits non-zero, never with a traceback; a read command refuses an account that does not exist."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import boto3
import pytest
from botocore import exceptions as aws
from moto.server import ThreadedMotoServer
from runplane import cli
from runplane import definitions as defs
from runplane.local.provision import _table_request, provision
from runplane.settings import Settings

from tests.cli import one_line_error, runplane
from tests.local_stack import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SESSION = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)


@pytest.fixture(scope="module")
def moto_server() -> Iterator[dict[str, str]]:
    """A moto server with the deployment's tables and queues, as a real account would have them, and the
    tables again under the settings' default names (runplane-api-keys, …): the environment of the first."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with mock.patch.dict(os.environ, AWS_ENDPOINT_URL=endpoint):
        created = provision(SESSION, "cli")
        defaults = Settings()
        for table in defs.TABLES:
            name = getattr(defaults, table.env_var.removeprefix("RUNPLANE_").lower())
            SESSION.client("dynamodb").create_table(**_table_request(table, name))
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


def test_an_unknown_aws_profile() -> None:
    answer = runplane("keys", "list", "--account", "acme", RUNPLANE_KEYS_TABLE="keys", AWS_PROFILE="nope")
    one_line_error(answer, "AWS profile 'nope' not found")


def test_an_endpoint_url_without_its_scheme() -> None:
    answer = runplane(
        "keys",
        "list",
        "--account",
        "acme",
        RUNPLANE_KEYS_TABLE="keys",
        AWS_ENDPOINT_URL="localhost:4566",
        **CREDENTIALS,
    )
    one_line_error(answer, "localhost:4566", "AWS_ENDPOINT_URL")


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


def test_a_connection_closed_by_the_endpoint(closing_server: str) -> None:
    answer = runplane(
        "keys",
        "list",
        "--account",
        "acme",
        RUNPLANE_KEYS_TABLE="keys",
        AWS_ENDPOINT_URL=closing_server,
        **CREDENTIALS,
    )
    one_line_error(answer, "cannot reach", closing_server)


def test_an_https_endpoint_that_answers_plain_http(moto_server: dict[str, str]) -> None:
    """Or a TLS proxy the machine does not trust: SSL errors."""
    https = moto_server["AWS_ENDPOINT_URL"].replace("http://", "https://")
    answer = runplane("keys", "list", "--account", "acme", **{**moto_server, "AWS_ENDPOINT_URL": https})
    one_line_error(answer, "cannot reach", https)


def test_an_invalid_runplane_setting_names_it_and_says_why(moto_server: dict[str, str]) -> None:
    answer = runplane(
        "keys", "list", "--account", "acme", **{**moto_server, "RUNPLANE_KEY_CACHE_SECONDS": "1m"}
    )
    one_line_error(answer, "RUNPLANE_KEY_CACHE_SECONDS='1m'", "valid number")


@pytest.mark.parametrize("content", ["{not json", '{"pid": 1}', "[]", '{"env": {"A": 1}}'])
def test_a_corrupt_local_json(tmp_path: Path, content: str) -> None:
    """Cut short (a disk full, a stack killed while writing a hand-edited one), or not a stack's."""
    (tmp_path / "local.json").write_text(content)
    answer = runplane("keys", "list", "--account", "acme", "--local", "--state-dir", str(tmp_path))
    one_line_error(answer, str(tmp_path / "local.json"), "start the local stack")


def test_a_deployment_with_the_default_names_needs_no_runplane_variable(moto_server: dict[str, str]) -> None:
    answer = runplane(
        "keys", "create", "--account", "acme", **CREDENTIALS, AWS_ENDPOINT_URL=moto_server["AWS_ENDPOINT_URL"]
    )
    assert answer.returncode == 0, answer.stderr
    assert '"account_id": "acme"' in answer.stdout


def test_an_account_whose_keys_predate_account_items_is_known(moto_server: dict[str, str]) -> None:
    """Keys made before accounts were opened: the account has keys but no item (keys.principal_of opens
    it when such a key authenticates). Its keys can be listed (to revoke them) and it can be shown."""
    dynamodb = SESSION.client("dynamodb", endpoint_url=moto_server["AWS_ENDPOINT_URL"])
    dynamodb.put_item(
        TableName=moto_server["RUNPLANE_KEYS_TABLE"],
        Item={
            "id": {"S": "0123456789abcdef"},
            "account_id": {"S": "legacy"},
            "secret_hash": {"S": "0" * 64},
            "scopes": {"L": [{"S": "admin"}]},
            "created_at": {"S": "2024-01-01T00:00:00+00:00"},
        },
    )
    listed = runplane("keys", "list", "--account", "legacy", **moto_server)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ["0123456789abcdef"]
    shown = runplane("accounts", "show", "--account", "legacy", **moto_server)
    assert shown.returncode == 0, shown.stderr
    assert '"account_id": "legacy"' in shown.stdout


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (aws.UnauthorizedSSOTokenError(), ["AWS credentials could not be loaded", "aws sso login"]),
        (aws.TokenRetrievalError(provider="sso", error_msg="Token has expired"), ["Token has expired"]),
        (
            aws.ReadTimeoutError(endpoint_url="https://sqs.example/", error="slow"),
            ["cannot reach https://sqs.example/"],
        ),
        (aws.ParamValidationError(report="Invalid length for parameter TableName,\nvalue: 0"), ["TableName"]),
        (aws.InvalidConfigError(error_msg="bad\nconfig"), ["AWS: bad config"]),
    ],
)
def test_other_aws_errors_are_one_line(error: Exception, words: list[str]) -> None:
    line = cli.unreachable(error)
    assert line is not None
    assert "\n" not in line
    for word in words:
        assert word in line, line


def test_errors_of_the_code_itself_are_left_to_raise() -> None:
    assert cli.unreachable(ValueError("a bug")) is None
    assert cli.unreachable(KeyError("env")) is None
