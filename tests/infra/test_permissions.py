"""The deployed roles, exercised: each function's code path runs against moto with IAM enforced, signed
by a role that holds exactly the policies the synthesized template attaches to that function's role.

The roles are built from the template itself: its AWS::IAM::Policy documents, with every Ref, Fn::GetAtt,
Fn::Join and Fn::Sub resolved to the tables, queues and bucket provisioned locally. A function's code then
runs with its role's credentials only (the adapters' boto3 clients are rebuilt from them), and every IAM
decision moto takes is recorded: a path passes when its role was never refused, and each role is refused
what its function does not need.

moto enforces IAM once `INITIAL_NO_AUTH_ACTION_COUNT` requests have been served (here: at once, inside
`Roles.acting`), but in moto 5.2 it checks DynamoDB requests against the resource "*" (so a table-scoped
grant never matches), authorizes transactions and SQS batch calls by their API names (AWS authorizes
each item of TransactWriteItems as PutItem/UpdateItem/DeleteItem/ConditionCheckItem on its table, and
DeleteMessageBatch as DeleteMessage), and answers a refused DynamoDB or SQS call with an XML body the
JSON protocol cannot parse (the code sees a ClientError "403"). `enforce_like_aws` closes the first two
gaps with AWS's documented rules; the third is why refusals are recorded where moto decides them, not
where the code sees them (an AccessDenied the code logs and swallows still fails the test).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.core.authorization import enable_iam_authentication
from moto.dynamodb.responses import DynamoHandler
from moto.iam.access_control import IAMRequest, IAMRequestBase
from moto.sqs.responses import SQSResponse
from runplane import definitions as defs
from runplane.adapters import aws
from runplane.domain.ids import intake_run_id
from runplane.handlers import sweeper
from runplane.local.lambda_context import LocalLambdaContext
from runplane.local.poller import Poller
from runplane.logic import admission, services
from runplane.logic.callbacks import delivery_id_for
from runplane.logic.keys import CreatedKey
from runplane.logic.sweep import sweep

from tests.conftest import Api, make_runnable
from tests.infra.conftest import resources
from tests.receiver import Answer, receiving

pytestmark = pytest.mark.infra

ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


# --- moto, deciding as IAM does for the calls Runplane makes ---

TRANSACTION_ITEMS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
SQS_BATCHES = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def dynamodb_permissions(
    operation: str, body: dict[str, Any], region: str, account: str
) -> list[tuple[str, str]]:
    """The (action, resource) pairs IAM authorizes for one DynamoDB request: per table and index."""

    def arn(table: str) -> str:
        return table if table.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{table}"

    if operation in ("TransactWriteItems", "TransactGetItems"):
        pairs = [
            (TRANSACTION_ITEMS[kind], arn(request["TableName"]))
            for item in body.get("TransactItems", [])
            for kind, request in item.items()
        ]
    elif operation in ("BatchGetItem", "BatchWriteItem"):
        pairs = [(operation, arn(table)) for table in body.get("RequestItems", {})]
    elif body.get("TableName"):
        index = body.get("IndexName")
        pairs = [(operation, arn(body["TableName"]) + (f"/index/{index}" if index else ""))]
    else:
        pairs = [(operation, "*")]
    return list(dict.fromkeys(pairs))


def _acting_as(action: str) -> type[IAMRequest]:
    class Request(IAMRequest):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "action": action})

    return Request


@dataclass(frozen=True)
class Decision:
    principal: str  # the role name
    action: str
    resource: str
    allowed: bool


@dataclass
class Record:
    decisions: list[Decision] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # 403s a boto3 call raised


def enforce_like_aws(monkeypatch: pytest.MonkeyPatch) -> Record:
    """moto's IAM checks with DynamoDB and SQS authorized as AWS does, every decision recorded."""
    record = Record()

    def authorize_dynamodb(handler: Any, resource: str = "*") -> None:
        body = getattr(handler, "body", None) or {}
        for action, arn in dynamodb_permissions(
            handler._get_action(), body, handler.region, handler.current_account
        ):
            handler._authenticate_and_authorize_action(_acting_as(action), arn)

    def authorize_sqs(handler: Any, resource: str = "*") -> None:
        action = handler._get_action()
        handler._authenticate_and_authorize_action(_acting_as(SQS_BATCHES.get(action, action)), resource)

    checked = IAMRequestBase.check_action_permitted

    def check_action_permitted(request: Any, resource: str) -> None:
        role = request._access_key.arn.split(":assumed-role/")[-1].split("/")[0]
        try:
            checked(request, resource)
        except Exception:
            record.decisions.append(Decision(role, request._action, resource, False))
            raise
        record.decisions.append(Decision(role, request._action, resource, True))

    call = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        try:
            return call(client, operation, params)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
                record.refusals.append(f"{client.meta.service_model.service_name}.{operation}: {error}")
            raise

    monkeypatch.setattr(DynamoHandler, "_authenticate_and_authorize_normal_action", authorize_dynamodb)
    monkeypatch.setattr(SQSResponse, "_authenticate_and_authorize_normal_action", authorize_sqs)
    monkeypatch.setattr(IAMRequestBase, "check_action_permitted", check_action_permitted)
    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return record


# --- the template's roles, resolved to the local resources ---


def function_roles(template: dict[str, Any]) -> dict[str, str]:
    """Function name -> the logical id of its role, read off the template's Lambda functions."""
    by_handler = {f.handler: f.name for f in defs.FUNCTIONS}
    return {
        by_handler[p["Properties"]["Handler"]]: p["Properties"]["Role"]["Fn::GetAtt"][0]
        for p in resources(template, "AWS::Lambda::Function").values()
        if p["Properties"].get("Handler") in by_handler
    }


def role_policies(template: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    """Every policy document the template attaches to `role` (its own and AWS::IAM::Policy resources)."""
    properties = template["Resources"][role]["Properties"]
    assert not properties.get("ManagedPolicyArns"), "a function role with managed policies"
    documents = {p["PolicyName"]: p["PolicyDocument"] for p in properties.get("Policies", [])}
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for logical, policy in resources(template, kind).items():
            if {"Ref": role} in policy["Properties"].get("Roles", []):
                documents[logical] = policy["Properties"]["PolicyDocument"]
    return documents


def local_attributes(template: dict[str, Any], env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Logical id -> {"Ref": ..., "Arn": ...} of the local table, queue or bucket it is (through the
    environment variable the template gives the functions), and of each log group."""
    referenced: dict[str, str] = {}
    for function in resources(template, "AWS::Lambda::Function").values():
        for name, value in function["Properties"].get("Environment", {}).get("Variables", {}).items():
            if isinstance(value, dict) and list(value) == ["Ref"]:
                referenced[value["Ref"]] = name
    root = boto3.session.Session()
    dynamodb, sqs = root.client("dynamodb"), root.client("sqs")
    found: dict[str, dict[str, str]] = {}
    for logical, variable in referenced.items():
        kind, local = template["Resources"][logical]["Type"], env[variable]
        if kind == "AWS::DynamoDB::Table":
            arn = dynamodb.describe_table(TableName=local)["Table"]["TableArn"]
        elif kind == "AWS::SQS::Queue":
            arn = sqs.get_queue_attributes(QueueUrl=local, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        elif kind == "AWS::S3::Bucket":
            arn = f"arn:aws:s3:::{local}"
        else:
            raise AssertionError(f"{variable} refers to a {kind}")
        found[logical] = {"Ref": local, "Arn": arn}
    for kind in ("AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket"):
        assert set(resources(template, kind)) <= set(found), f"a {kind} the functions are not told about"
    for logical in resources(template, "AWS::Logs::LogGroup"):  # written by Lambda itself, not the code
        name = f"/aws/lambda/{logical}"
        found[logical] = {"Ref": name, "Arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"}
    return found


def resolve(node: Any, attributes: dict[str, dict[str, str]]) -> Any:
    """`node` with CloudFormation's Ref, Fn::GetAtt, Fn::Join and Fn::Sub replaced by local values."""

    def ref(name: str) -> str:
        return PSEUDO[name] if name in PSEUDO else attributes[name]["Ref"]

    def get_att(target: str | list[str]) -> str:
        logical, attribute = target.split(".", 1) if isinstance(target, str) else target
        return attributes[logical][attribute]

    if isinstance(node, list):
        return [resolve(item, attributes) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        [(function, argument)] = node.items()
        if function == "Ref":
            return ref(argument)
        if function == "Fn::GetAtt":
            return get_att(argument)
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(resolve(part, attributes) for part in parts)
        if function == "Fn::Sub":
            text, values = (argument, {}) if isinstance(argument, str) else argument

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in values:
                    return resolve(values[name], attributes)
                return get_att(name) if "." in name else ref(name)

            return re.sub(r"\$\{([^}!][^}]*)\}", substitute, text)
        if function.startswith("Fn::"):
            raise NotImplementedError(function)
    return {key: resolve(value, attributes) for key, value in node.items()}


def _fresh_clients() -> None:
    aws.session.cache_clear()
    aws._client.cache_clear()


@dataclass
class Phase:
    """What happened while one function's role was acting."""

    function: str
    decisions: list[Decision] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def used(self, service: str) -> set[tuple[str, str]]:
        return {(d.action, d.resource) for d in self.decisions if d.allowed and d.action.startswith(service)}


class Roles:
    """One IAM role per function, as the template has it, and its credentials from sts:AssumeRole."""

    def __init__(self, template: dict[str, Any], env: dict[str, str], record: Record):
        self.record = record
        self.attributes = local_attributes(template, env)
        self.documents: dict[str, dict[str, dict[str, Any]]] = {}
        self.credentials: dict[str, dict[str, str]] = {}
        iam, sts = boto3.client("iam"), boto3.client("sts")
        for function, role in function_roles(template).items():
            properties = template["Resources"][role]["Properties"]
            arn = iam.create_role(
                RoleName=self.role_name(function),
                AssumeRolePolicyDocument=json.dumps(properties["AssumeRolePolicyDocument"]),
                Description=properties.get("Description", ""),
            )["Role"]["Arn"]
            self.documents[function] = {
                name: resolve(document, self.attributes)
                for name, document in role_policies(template, role).items()
            }
            self.grant(function)
            assumed = sts.assume_role(RoleArn=arn, RoleSessionName=function)["Credentials"]
            self.credentials[function] = {
                "AWS_ACCESS_KEY_ID": assumed["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": assumed["SecretAccessKey"],
                "AWS_SESSION_TOKEN": assumed["SessionToken"],
            }
        assert set(self.credentials) == {f.name for f in defs.FUNCTIONS}

    @staticmethod
    def role_name(function: str) -> str:
        return f"runplane-{function}"

    def grant(self, function: str, *, without: str = "") -> None:
        """Put the role's policies in place; `without`: drop every resource starting with that ARN."""
        iam = boto3.client("iam")
        for name, document in self.documents[function].items():
            statements = []
            for statement in document["Statement"]:
                listed = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                kept = [
                    r for r in listed if not without or (r != without and not r.startswith(without + "/"))
                ]
                if kept:
                    statements.append({**statement, "Resource": kept})
            iam.put_role_policy(
                RoleName=self.role_name(function),
                PolicyName=name,
                PolicyDocument=json.dumps({**document, "Statement": statements}),
            )

    def arn(self, env_var: str) -> str:
        """The ARN of the local resource the functions find in `env_var`."""
        value = os.environ[env_var]
        return next(a["Arn"] for a in self.attributes.values() if a["Ref"] == value)

    @contextmanager
    def acting(self, function: str, *, refusals_expected: bool = False) -> Iterator[Phase]:
        """Everything inside runs as `function`'s role with IAM enforced; without `refusals_expected` it
        fails unless IAM allowed every request."""
        saved = {name: os.environ.get(name) for name in CREDENTIALS}
        phase = Phase(function)
        decisions, refusals = len(self.record.decisions), len(self.record.refusals)
        os.environ.update(self.credentials[function])
        _fresh_clients()
        try:
            with enable_iam_authentication():
                yield phase
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _fresh_clients()
            phase.decisions = self.record.decisions[decisions:]
            phase.refusals = self.record.refusals[refusals:]
        if not refusals_expected:
            denied = [d for d in phase.decisions if not d.allowed]
            assert denied == [], f"{function} was refused: {denied}"
            assert phase.refusals == [], f"{function} was refused: {phase.refusals}"
            others = {d.principal for d in phase.decisions} - {self.role_name(function)}
            assert others == set(), f"requests signed by {others} while {function} was acting"


@pytest.fixture
def roles(template: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Roles:
    record = enforce_like_aws(monkeypatch)
    return Roles(template, env, record)


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of storage in play: payloads past 1 KiB go to S3, the rate limit counts requests,
    loopback receivers are allowed, callbacks retry quickly."""
    for name, value in {
        "RUNPLANE_INLINE_LIMIT_BYTES": "1024",
        "RUNPLANE_RATE_LIMIT_BURST": "1000",
        "RUNPLANE_ALLOW_LOOPBACK": "1",
        "RUNPLANE_CALLBACK_SCHEDULE": "0.2,0.2",
        "RUNPLANE_CALLBACK_TIMEOUT_SECONDS": "1",
        "RUNPLANE_CONCURRENCY_RECHECK_SECONDS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    services.reset()


LARGE = {"text": "x" * 2000}  # past the inline limit: kept in the payload bucket


def consume(function: str, *, rounds: int = 30) -> int:
    """Play the function's event source mapping (with the credentials in force) until its queue is empty."""
    poller = Poller(defs.function(function), wait_seconds=0)
    received = 0
    for _ in range(rounds):
        polled = poller.poll_once()
        if not polled:
            return received
        received += polled
    return received


def run_record(run_id: str) -> Any:
    found = services.services().runs.get("acme", run_id, consistent=True)
    assert found is not None
    return found


def state(api: Api, run_id: str) -> dict[str, Any]:
    reply = api.get(f"/v1/run/{run_id}")
    assert reply.status == 200, reply.text
    return reply.json()


def error_code(api: Api, run_id: str) -> str | None:
    return ((state(api, run_id).get("result") or {}).get("error") or {}).get("code")


def queued(env_var: str) -> list[dict[str, Any]]:
    return (
        boto3.client("sqs")
        .receive_message(QueueUrl=os.environ[env_var], MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )


def start(api: Api, runnable_id: str, body: dict[str, Any] | None = None, **kw: Any) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", body or {}, **kw)
    assert reply.status == 202, reply.text
    return reply.json()["id"]


# --- moto's enforcement, probed ---


def test_moto_decides_dynamodb_sqs_and_s3_requests_by_the_policy(roles: Roles, env: dict[str, str]) -> None:
    """The callbacks role may read runs, not write them; send to its DLQ, not to dispatch; read payloads,
    not write them. If moto stopped enforcing any of it, every other test here would prove nothing."""
    with roles.acting("callbacks", refusals_expected=True) as phase:
        dynamodb, sqs, s3 = (aws.client(s) for s in ("dynamodb", "sqs", "s3"))
        key = {"pk": {"S": "acme#none"}}
        dynamodb.get_item(TableName=env["RUNPLANE_RUNS_TABLE"], Key=key)
        dynamodb.query(
            TableName=env["RUNPLANE_RUNS_TABLE"],
            IndexName="by_account",
            KeyConditionExpression="account_id = :a",
            ExpressionAttributeValues={":a": {"S": "acme"}},
        )
        sqs.send_message(QueueUrl=env["RUNPLANE_CALLBACKS_DLQ_URL"], MessageBody="{}")
        with pytest.raises(ClientError):
            s3.get_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/none")  # allowed: 404, not 403
        for refused in (
            lambda: dynamodb.put_item(TableName=env["RUNPLANE_RUNS_TABLE"], Item=key),
            lambda: dynamodb.query(
                TableName=env["RUNPLANE_KEYS_TABLE"],
                IndexName="by_account",
                KeyConditionExpression="account_id = :a",
                ExpressionAttributeValues={":a": {"S": "acme"}},
            ),
            lambda: dynamodb.transact_write_items(
                TransactItems=[{"Put": {"TableName": env["RUNPLANE_RUNS_TABLE"], "Item": key}}]
            ),
            lambda: sqs.send_message(QueueUrl=env["RUNPLANE_DISPATCH_QUEUE_URL"], MessageBody="{}"),
            lambda: s3.put_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/x", Body=b"{}"),
        ):
            with pytest.raises(ClientError) as caught:
                refused()
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    allowed = {(d.action, d.resource.rsplit(":", 1)[-1], d.allowed) for d in phase.decisions}
    assert allowed == {
        ("dynamodb:GetItem", "table/test-runs", True),
        ("dynamodb:Query", "table/test-runs/index/by_account", True),
        ("sqs:SendMessage", "test-callbacks-dlq", True),
        ("s3:GetObject", "test-payloads/acme/none", True),
        ("dynamodb:PutItem", "table/test-runs", False),
        ("dynamodb:Query", "table/test-api_keys/index/by_account", False),
        ("dynamodb:PutItem", "table/test-runs", False),  # the transaction's Put
        ("sqs:SendMessage", "test-dispatch", False),
        ("s3:PutObject", "test-payloads/acme/x", False),
    }
    assert len(phase.refusals) == 5


# --- each function's path, as its role ---


@pytest.mark.usefixtures("settings")
def test_the_api_role_serves_every_route_family(roles: Roles, account: CreatedKey) -> None:
    echo = make_runnable(account.account_id, "echo")
    big = start(Api(account.token), make_runnable("acme", "big"), {"inputs": {"size": 5000}})
    consume("worker")  # (as the root user) its outcome is kept in the payload bucket
    with roles.acting("api") as phase:
        api = Api(account.token)
        created = api.post(
            "/v1/runnables", {"name": "echo2", "kind": "python", "config": {"function": "echo"}}
        )
        assert created.status == 201, created.text
        runnable = created.json()["id"]
        assert api.get("/v1/runnables").status == 200
        assert api.get(f"/v1/runnable/{runnable}").status == 200
        replaced = api.call(
            "PUT",
            f"/v1/runnable/{runnable}",
            {"name": "echo2", "kind": "python", "config": {"function": "echo"}, "max_concurrency": 2},
        )
        assert replaced.status == 200, replaced.text

        body = {"inputs": LARGE, "callback_url": "https://hooks.example.com/done", "metadata": {"m": 1}}
        run_id = start(api, echo, body, headers={"Idempotency-Key": "once"})
        assert start(api, echo, body, headers={"Idempotency-Key": "once"}) == run_id  # replayed
        sync = api.post(f"/v1/runnable/{echo}/runs?mode=sync", {}, headers={"Prefer": "wait=0"})
        assert sync.status == 202, sync.text
        assert state(api, run_id)["metadata"] == {"m": 1}
        assert state(api, big)["result"]["outputs"] == {"text": "x" * 5000}
        for query in ("", "?status=waiting", f"?runnable_id={echo}", f"?parent_run_id={run_id}"):
            assert api.get(f"/v1/runs{query}").status == 200, query
        cancelled = api.post(f"/v1/run/{run_id}/cancel")
        assert (cancelled.status, cancelled.json()["status"]) == (200, "cancelled")
        assert api.get(f"/v1/run/{run_id}/callbacks").status == 200
        assert api.post(f"/v1/run/{run_id}/callbacks/redeliver").status in (202, 409)

        assert api.get("/v1/callbacks/secret").status == 200
        assert api.post("/v1/callbacks/secret/rotate").status == 200
        assert api.get("/v1/keys").status == 200
        key = api.post("/v1/keys", {"name": "ci", "scopes": ["runs:read"]})
        assert key.status == 201, key.text
        assert api.call("DELETE", f"/v1/keys/{key.json()['id']}").status == 204
        assert api.get("/v1/account").status == 200
        assert api.get("/v1/account/usage").status == 200

        many = api.post(f"/v1/agents/run/{echo}/async/many/", {"inputs": [{"i": 0}, {"i": 1}]})
        assert many.status == 200, many.text
        assert api.get(f"/v1/agents/{echo}/jobs/").status == 200
        cotool = api.post(f"/api/agents/{echo}/run-async", {"inputs": {"q": 1}})
        assert cotool.status in (200, 201, 202), cotool.text
        assert api.get("/api/agents").status == 200
        assert api.call("DELETE", f"/v1/runnable/{runnable}").status == 204
    used = phase.used("")
    assert {a for a, _ in used} >= {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "sqs:SendMessage",
        "s3:PutObject",
        "s3:GetObject",
    }


@pytest.mark.usefixtures("settings")
def test_the_intake_role_accepts_and_parks_intake_messages(roles: Roles, account: CreatedKey) -> None:
    echo = make_runnable(account.account_id, "echo")
    sqs = boto3.client("sqs")
    good = sqs.send_message(
        QueueUrl=os.environ["RUNPLANE_INTAKE_QUEUE_URL"],
        MessageBody=json.dumps({"account_id": "acme", "runnable_id": echo, "inputs": LARGE}),
    )["MessageId"]
    sqs.send_message(
        QueueUrl=os.environ["RUNPLANE_INTAKE_QUEUE_URL"],
        MessageBody=json.dumps({"account_id": "acme", "runnable_id": echo, "inputs": "not an object"}),
    )
    with roles.acting("intake") as phase:
        assert consume("intake") == 2
    record = run_record(intake_run_id(good))
    assert (record.status.value, record.created_by) == ("waiting", "intake")
    [parked] = queued("RUNPLANE_INTAKE_DLQ_URL")
    assert parked["MessageAttributes"]["runplane-error-code"]["StringValue"] == "validation_error"
    assert [m["Body"] for m in queued("RUNPLANE_DISPATCH_QUEUE_URL")] == [
        json.dumps({"account_id": "acme", "run_id": record.id}, separators=(",", ":"))
    ]
    assert ("sqs:DeleteMessage", roles.arn("RUNPLANE_INTAKE_QUEUE_URL")) in phase.used("sqs")
    assert any(a == "s3:PutObject" for a, _ in phase.used("s3"))


@pytest.mark.usefixtures("settings")
def test_the_worker_role_executes_every_kind_of_run(roles: Roles, account: CreatedKey) -> None:
    api = Api(account.token)
    echo, big, llm, fail = (make_runnable("acme", f) for f in ("echo", "big", "llm", "fail"))
    parent = make_runnable("acme", "parent")
    limited = make_runnable("acme", "sleep", max_concurrency=1)
    runs = {
        "echo": start(api, echo, {"inputs": LARGE, "callback_url": "https://hooks.example.com/done"}),
        "big": start(api, big, {"inputs": {"size": 5000}}),
        "llm": start(api, llm),
        "fail": start(api, fail, {"inputs": {"message": "no"}}),
        "parent": start(api, parent, {"inputs": {"child": echo, "items": [{"n": 1}], "wait": False}}),
        "first": start(api, limited, {"inputs": {"seconds": 0}}),
        "second": start(api, limited, {"inputs": {"seconds": 0}}),
    }
    with roles.acting("worker") as phase:
        assert consume("worker") >= len(runs) + 1  # the parent's child and the limited run's wake-up
    states = {name: state(api, run_id)["status"] for name, run_id in runs.items()}
    assert states == {**dict.fromkeys(runs, "completed"), "fail": "failed"}
    [child] = api.get(f"/v1/runs?parent_run_id={runs['parent']}").json()["items"]
    assert child["status"] == "completed"
    assert state(api, runs["big"])["result"]["outputs"] == {"text": "x" * 5000}
    assert api.get("/v1/account/usage").json()["total_input_tokens"] == 150  # the llm run's usage
    assert len(queued("RUNPLANE_CALLBACKS_QUEUE_URL")) == 1
    tables = {r.split(":table/")[-1].split("/")[0] for _, r in phase.used("dynamodb")}
    assert tables == {"test-runs", "test-runnables", "test-callbacks", "test-accounts", "test-concurrency"}
    assert {a for a, _ in phase.used("s3")} == {"s3:GetObject", "s3:PutObject"}


@pytest.mark.usefixtures("settings")
def test_the_dead_letters_role_fails_dead_lettered_runs(roles: Roles, account: CreatedKey) -> None:
    api = Api(account.token)
    echo = make_runnable("acme", "echo")
    limited = make_runnable("acme", "sleep", max_concurrency=1)
    called = start(api, echo, {"inputs": LARGE, "callback_url": "https://hooks.example.com/done"})
    holder = start(api, limited, {"inputs": {"seconds": 0}})
    waiting = start(api, limited, {"inputs": {"seconds": 0}})
    sqs = boto3.client("sqs")
    for message in queued("RUNPLANE_DISPATCH_QUEUE_URL"):  # SQS's redrive after max receives
        if json.loads(message["Body"])["run_id"] != holder:
            sqs.send_message(QueueUrl=os.environ["RUNPLANE_DISPATCH_DLQ_URL"], MessageBody=message["Body"])
        sqs.delete_message(
            QueueUrl=os.environ["RUNPLANE_DISPATCH_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
        )
    admission.admit(run_record(holder), "vanished", 30)  # holds the slot `waiting` would need
    with roles.acting("dead_letters"):
        assert consume("dead_letters") == 2
    for run_id in (called, waiting):
        assert (state(api, run_id)["status"], error_code(api, run_id)) == ("failed", "dispatch_failed")
    assert len(queued("RUNPLANE_CALLBACKS_QUEUE_URL")) == 1


@pytest.mark.usefixtures("settings")
def test_the_sweeper_role_redispatches_ends_requeues_and_rechecks(
    roles: Roles, account: CreatedKey, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_ATTEMPTS", "1")
    services.reset()
    api = Api(account.token)
    echo = make_runnable("acme", "echo")
    limited = make_runnable("acme", "sleep", max_concurrency=1)
    lost = start(api, echo, {"inputs": LARGE})  # its dispatch message is lost
    crashed = start(api, limited, {"inputs": {"seconds": 0}, "callback_url": "https://hooks.example.com/x"})
    queued_behind = start(api, limited, {"inputs": {"seconds": 0}})
    cancelling = start(api, echo)
    sqs = boto3.client("sqs")
    sqs.purge_queue(QueueUrl=env["RUNPLANE_DISPATCH_QUEUE_URL"])
    admission.admit(run_record(crashed), "vanished", 30)  # its worker died holding the slot
    admission.admit(run_record(queued_behind), "waiting", 30)  # waits in the slot's queue
    settings = services.services().settings
    store = services.services().runs
    now = time.time()
    assert store.claim(
        run_record(cancelling), "doomed", now, now + settings.lease_seconds, settings.max_attempts
    )
    api.post(f"/v1/run/{cancelling}/cancel")
    # a delivery whose message was lost
    called = start(api, echo, {"callback_url": "https://hooks.example.com/y"})
    with roles.acting("worker"):
        consume("worker")
    sqs.purge_queue(QueueUrl=env["RUNPLANE_CALLBACKS_QUEUE_URL"])
    boto3.client("dynamodb").update_item(
        TableName=env["RUNPLANE_CALLBACKS_TABLE"],
        Key={"pk": {"S": f"acme#{called}"}, "id": {"S": delivery_id_for(called)}},
        UpdateExpression="SET next_attempt_at = :t",
        ExpressionAttributeValues={":t": {"N": str(now - 16 * 60)}},
    )
    with roles.acting("sweeper"):
        actions = sweep(now=now + 400)
        assert (
            sweeper.lambda_handler(SCHEDULED_EVENT, LocalLambdaContext("sweeper", 60))["actions"] is not None
        )
    assert actions["redispatched"] >= 1, actions  # `lost`, whose message was lost
    assert (actions["failed"], actions["cancelled"]) == (1, 1), actions
    assert (actions["callback_requeued"], actions["scopes_rechecked"]) == (1, 1), actions
    assert state(api, lost)["status"] == "waiting"
    assert error_code(api, crashed) == "worker_lost"
    assert state(api, cancelling)["status"] == "cancelled"


# An EventBridge scheduled event, as the sweeper's rule delivers it.
SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": ACCOUNT,
    "time": "2015-10-08T16:53:06Z",
    "region": REGION,
    "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/runplane-sweeper"],
    "detail": {},
}


@pytest.mark.usefixtures("settings")
def test_the_callbacks_role_delivers_retries_and_buries(roles: Roles, account: CreatedKey) -> None:
    api = Api(account.token)
    echo = make_runnable("acme", "echo")
    with receiving(Answer(200)) as ok, receiving(Answer(500)) as failing:
        delivered = start(api, echo, {"inputs": LARGE, "callback_url": ok.url})
        dead = start(api, echo, {"callback_url": failing.url})
        with roles.acting("worker"):
            consume("worker")
        deadline = time.monotonic() + 20
        with roles.acting("callbacks") as phase:
            while not (ok.received and len(failing.received) == 3):
                assert time.monotonic() < deadline, "deliveries did not settle"
                if not consume("callbacks"):
                    time.sleep(0.1)
    deliveries = services.services().deliveries
    assert deliveries.get("acme", delivered, delivery_id_for(delivered)).state == "succeeded"
    assert deliveries.get("acme", dead, delivery_id_for(dead)).state == "dead"
    [buried] = queued("RUNPLANE_CALLBACKS_DLQ_URL")
    assert json.loads(buried["Body"])["run_id"] == dead
    assert ("sqs:ChangeMessageVisibility", roles.arn("RUNPLANE_CALLBACKS_QUEUE_URL")) in phase.used("sqs")


@pytest.mark.usefixtures("settings")
def test_the_roles_carry_async_agents_runs_from_hand_off_to_their_end(
    roles: Roles, account: CreatedKey, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker hands runs to an agent and tells it of a cancellation; the api records the agent's
    reports (their events in the run events table) and ends the run; the sweeper gives up a silent one."""
    monkeypatch.setenv("RUNPLANE_PUBLIC_URL", "https://runplane.example")
    monkeypatch.setenv("RUNPLANE_MAX_ATTEMPTS", "1")
    services.reset()
    api = Api(account.token)

    def agent_runnable(name: str, **config: Any) -> str:
        body = {"name": name, "kind": "http", "config": {"url": agent.url, "mode": "async", **config}}
        created = api.post("/v1/runnables", body)
        assert created.status == 201, created.text
        return created.json()["id"]

    with receiving(Answer(status=202, body=b"")) as agent, receiving() as cancels:
        reporting = start(api, agent_runnable("reporting", heartbeat_seconds=60), {"inputs": LARGE})
        cancelled = start(api, agent_runnable("cancelled", cancel_url=cancels.url))
        silent = start(api, agent_runnable("silent", heartbeat_seconds=1))
        with roles.acting("worker"):
            assert consume("worker") == 3
        sent = {json.loads(r.body)["run_id"]: json.loads(r.body) for r in agent.received}
        assert set(sent) == {reporting, cancelled, silent}

        def report(run_id: str, body: dict[str, Any]) -> dict[str, Any]:
            path = urlsplit(sent[run_id]["report_url"]).path
            assert path == f"/v1/run/{run_id}/report"
            reply = api.post(path, body, token=sent[run_id]["run_token"])
            assert reply.status == 200, reply.text
            return reply.json()

        usage = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 2}
        with roles.acting("api") as phase:
            report(reporting, {"state": {"step": 1}, "logs": ["reading"], "usage": [usage]})
            report(reporting, {"outputs": {"draft": "a"}, "partial": True})
            report(reporting, {})  # a heartbeat
            assert report(reporting, {"outputs": LARGE, "metadata": {"pages": 3}})["status"] == "completed"
            assert api.get(f"/v1/run/{reporting}/logs").json()["lines"][0]["message"] == "reading"
            assert api.post(f"/v1/run/{cancelled}/cancel").status == 202
        events_table = roles.arn("RUNPLANE_EVENTS_TABLE")
        assert ("dynamodb:PutItem", events_table) in phase.used("dynamodb")
        assert ("sqs:SendMessage", roles.arn("RUNPLANE_DISPATCH_QUEUE_URL")) in phase.used("sqs")
        with roles.acting("worker"):
            consume("worker")  # tells the agent (the delayed message ends it after the grace)
        assert len(cancels.received) == 1
        with roles.acting("api"):
            assert report(cancelled, {"outputs": {"stopped": True}})["status"] == "cancelled"
    time.sleep(1.2)  # the silent agent's heartbeat passes
    with roles.acting("sweeper"):
        actions = sweep()
    assert actions["failed"] == 1, actions
    assert state(api, reporting)["result"]["outputs"] == LARGE
    assert state(api, cancelled)["status"] == "cancelled"
    assert error_code(api, silent) == "heartbeat_timeout"


# --- what each role must be refused ---


def _dynamodb(operation: str, env_var: str, **extra: Any) -> Callable[[dict[str, str]], Any]:
    def call(env: dict[str, str]) -> Any:
        key = {"pk": {"S": "acme#x"}} if env_var != "RUNPLANE_KEYS_TABLE" else {"id": {"S": "k"}}
        if env_var == "RUNPLANE_RUNNABLES_TABLE":
            key = {"account_id": {"S": "acme"}, "id": {"S": "r"}}
        client = aws.client("dynamodb")
        if operation == "PutItem":
            return client.put_item(TableName=env[env_var], Item=key)
        if operation == "UpdateItem":
            return client.update_item(
                TableName=env[env_var],
                Key=key,
                UpdateExpression="SET x = :x",
                ExpressionAttributeValues={":x": {"S": "1"}},
            )
        return client.get_item(TableName=env[env_var], Key=key)

    call.__name__ = f"dynamodb.{operation} {env_var}"
    return call


def _send(env_var: str) -> Callable[[dict[str, str]], Any]:
    def call(env: dict[str, str]) -> Any:
        return aws.client("sqs").send_message(QueueUrl=env[env_var], MessageBody="{}")

    return call


def _receive(env_var: str) -> Callable[[dict[str, str]], Any]:
    def call(env: dict[str, str]) -> Any:
        return aws.client("sqs").receive_message(QueueUrl=env[env_var], WaitTimeSeconds=0)

    return call


def _put_payload(env: dict[str, str]) -> Any:
    return aws.client("s3").put_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/x.json", Body=b"{}")


def _delete_payload(env: dict[str, str]) -> Any:
    return aws.client("s3").delete_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/x.json")


REFUSED = [
    ("api", "send to the intake DLQ", _send("RUNPLANE_INTAKE_DLQ_URL")),
    ("api", "receive from dispatch", _receive("RUNPLANE_DISPATCH_QUEUE_URL")),
    ("api", "delete a payload", _delete_payload),
    ("intake", "write the keys table", _dynamodb("PutItem", "RUNPLANE_KEYS_TABLE")),
    ("intake", "read callbacks", _dynamodb("GetItem", "RUNPLANE_CALLBACKS_TABLE")),
    ("intake", "write runnables", _dynamodb("PutItem", "RUNPLANE_RUNNABLES_TABLE")),
    ("intake", "send a callback", _send("RUNPLANE_CALLBACKS_QUEUE_URL")),
    ("worker", "write the keys table", _dynamodb("PutItem", "RUNPLANE_KEYS_TABLE")),
    ("worker", "read the keys table", _dynamodb("GetItem", "RUNPLANE_KEYS_TABLE")),
    ("worker", "write runnables", _dynamodb("UpdateItem", "RUNPLANE_RUNNABLES_TABLE")),
    ("worker", "receive intake", _receive("RUNPLANE_INTAKE_QUEUE_URL")),
    ("dead_letters", "read the keys table", _dynamodb("GetItem", "RUNPLANE_KEYS_TABLE")),
    ("dead_letters", "write runnables", _dynamodb("PutItem", "RUNPLANE_RUNNABLES_TABLE")),
    ("dead_letters", "receive dispatch", _receive("RUNPLANE_DISPATCH_QUEUE_URL")),
    ("sweeper", "read the keys table", _dynamodb("GetItem", "RUNPLANE_KEYS_TABLE")),
    ("sweeper", "write runnables", _dynamodb("PutItem", "RUNPLANE_RUNNABLES_TABLE")),
    ("sweeper", "receive dispatch", _receive("RUNPLANE_DISPATCH_QUEUE_URL")),
    ("callbacks", "write runs", _dynamodb("UpdateItem", "RUNPLANE_RUNS_TABLE")),
    ("callbacks", "read the keys table", _dynamodb("GetItem", "RUNPLANE_KEYS_TABLE")),
    ("callbacks", "write a payload", _put_payload),
    ("callbacks", "dispatch a run", _send("RUNPLANE_DISPATCH_QUEUE_URL")),
]


@pytest.mark.parametrize(("function", "what", "call"), REFUSED, ids=[f"{f}: {w}" for f, w, _ in REFUSED])
def test_a_role_is_refused_what_its_function_does_not_need(
    roles: Roles, env: dict[str, str], function: str, what: str, call: Callable[[dict[str, str]], Any]
) -> None:
    with roles.acting(function, refusals_expected=True) as phase, pytest.raises(ClientError) as caught:
        call(env)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    [decision] = phase.decisions
    assert (decision.principal, decision.allowed) == (Roles.role_name(function), False)


# --- and the paths notice a missing grant, even one the code survives ---


@pytest.mark.usefixtures("settings")
def test_a_grant_taken_from_the_worker_is_missed_even_where_the_code_carries_on(
    roles: Roles, account: CreatedKey
) -> None:
    """A callback that cannot be enqueued as its run ends is logged and left to the sweeper, not raised:
    the run still completes, and only the decision shows what the role lacked."""
    api = Api(account.token)
    run_id = start(api, make_runnable("acme", "echo"), {"callback_url": "https://hooks.example.com/done"})
    callbacks_queue = roles.arn("RUNPLANE_CALLBACKS_QUEUE_URL")
    roles.grant("worker", without=callbacks_queue)
    with roles.acting("worker", refusals_expected=True) as phase:
        consume("worker")
    assert state(api, run_id)["status"] == "completed"
    assert queued("RUNPLANE_CALLBACKS_QUEUE_URL") == []
    assert {(d.action, d.resource) for d in phase.decisions if not d.allowed} == {
        ("sqs:SendMessage", callbacks_queue)
    }


@pytest.mark.usefixtures("settings")
def test_a_grant_taken_from_the_api_fails_its_requests(roles: Roles, account: CreatedKey) -> None:
    roles.grant("api", without=roles.arn("RUNPLANE_KEYS_TABLE"))
    with roles.acting("api", refusals_expected=True) as phase:
        try:
            status = Api(account.token).get("/v1/runnables").status
        except ClientError:
            status = 502  # an invocation error: API Gateway's answer
    assert status >= 500
    assert [d.action for d in phase.decisions if not d.allowed] == ["dynamodb:GetItem"]
