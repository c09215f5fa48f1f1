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
DeleteMessageBatch as DeleteMessage), authorizes a PutObject with tags as PutObject alone (AWS also
requires s3:PutObjectTagging) and a CopyObject as a PutObject of its destination alone (AWS also requires
s3:GetObject on its source), answers a GetObject of a missing key 404 whatever the caller may list (AWS
answers 403 AccessDenied unless the caller has s3:ListBucket on the bucket), ignores the session policy a role was assumed with (AWS allows only what
both the role's policies and the session policy allow), matches a trust policy's principals against a
role session's own ARN (AWS admits a role's sessions by the role's ARN), lets a role session assume a
role for up to its MaxSessionDuration (AWS caps such "role chaining" at one hour, failing AssumeRole with
a longer DurationSeconds), reads a request's credentials from its Authorization header only (a presigned
URL, signed in its query string, and a presigned POST, signed by its form, fail inside moto with a
KeyError; AWS authorizes them as GetObject, and PutObject plus PutObjectTagging for a tagged form, of the
credentials that signed them), and answers a refused DynamoDB or SQS call with an XML body the JSON
protocol cannot parse (the code sees a ClientError "403").
`enforce_like_aws` closes the first eight gaps with AWS's documented rules; the last is why refusals are
recorded where moto decides them, not where the code sees them (an AccessDenied the code logs and
swallows still fails the test). A python run's code runs in a forked child: the decisions moto takes there
are spooled to a file and gathered by the phase. The presign role is the template's too: its trust policy
and policies.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import boto3
import pytest
import requests
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import settings as moto_settings
from moto.core.authorization import ActionAuthenticatorMixin, enable_iam_authentication
from moto.dynamodb.responses import DynamoHandler
from moto.iam.access_control import (
    AssumedRoleAccessKey,
    IAMPolicy,
    IAMRequest,
    IAMRequestBase,
    PermissionResult,
    S3IAMRequest,
    format_incoming_conditional_values,
)
from moto.s3.responses import S3Response
from moto.sqs.responses import SQSResponse
from moto.sts.exceptions import STSValidationError
from moto.sts.models import sts_backends
from moto.sts.responses import TokenResponse
from runplane import definitions as defs
from runplane.adapters import aws
from runplane.adapters.dynamo import due_shard
from runplane.domain.ids import intake_run_id
from runplane.handlers import sweeper
from runplane.local.lambda_context import LocalLambdaContext
from runplane.local.poller import Poller
from runplane.logic import admission, keys, services
from runplane.logic.callbacks import delivery_id_for
from runplane.logic.keys import CreatedKey
from runplane.logic.resources import resource_key
from runplane.logic.sweep import sweep
from runplane.runnables import resources as resource_files

from tests.conftest import Api, make_runnable
from tests.file_server import Served
from tests.file_server import serving as files_serving
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
PRESIGN_ROLE_ENV = "RUNPLANE_PRESIGN_ROLE_ARN"
PRESIGNER = "presigner"  # Roles.grant's name for the presign role
CHAINED_SESSION_SECONDS = 3600  # a role session assuming a role: AWS's cap, whatever the role allows


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
    spool: Path  # where forked children (a python run's code) write what they decided and were refused
    decisions: list[Decision] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # 403s a boto3 call raised
    owner: int = field(default_factory=os.getpid)

    def decided(self, decision: Decision) -> None:
        if os.getpid() == self.owner:
            self.decisions.append(decision)
        else:
            self._spool({"decision": dataclasses.asdict(decision)})

    def refused(self, refusal: str) -> None:
        if os.getpid() == self.owner:
            self.refusals.append(refusal)
        else:
            self._spool({"refusal": refusal})

    def gather(self) -> None:
        """Take in what forked children spooled."""
        if not self.spool.exists():
            return
        lines = self.spool.read_text().splitlines()
        self.spool.unlink()
        for line in lines:
            entry = json.loads(line)
            if "decision" in entry:
                self.decisions.append(Decision(**entry["decision"]))
            else:
                self.refusals.append(entry["refusal"])

    def _spool(self, entry: dict[str, Any]) -> None:
        with self.spool.open("a") as out:  # one short line a write, appended: children may write together
            out.write(json.dumps(entry) + "\n")


class SignedInS3Request(S3IAMRequest):
    """An S3 request signed in its query string (a presigned URL: X-Amz-Credential, X-Amz-Signature, ...)
    or by its form (a presigned POST: x-amz-credential, policy, x-amz-signature), which moto 5 cannot
    read. Its signature and expiry are checked as AWS checks them, then its action is authorized for the
    credentials that signed it (a role session: the role's policies and the session policy)."""

    def __init__(self, handler: Any, action: str, signed: dict[str, str]):
        self._signed = signed
        self._url = handler.uri
        headers = {
            "Authorization": f"AWS4-HMAC-SHA256 Credential={signed['credential']}, SignedHeaders=host, "
            f"Signature={signed['signature']}"
        }
        if signed.get("token"):
            headers["X-Amz-Security-Token"] = signed["token"]
        super().__init__(
            account_id=handler.current_account,
            method=handler.method,
            path=handler.raw_path,
            data=handler.data,
            body=b"",
            headers=headers,
            action=action,
        )

    @staticmethod
    def of(handler: Any) -> dict[str, str] | None:
        """The credentials a request without an Authorization header is signed with, if any."""
        if "Authorization" in handler.headers:
            return None

        def one(name: str) -> str:
            value = handler.querystring.get(name)
            return (value[0] if isinstance(value, list) else value) or ""

        if one("X-Amz-Credential"):
            names = {"credential": "X-Amz-Credential", "signature": "X-Amz-Signature"}
            names |= {"token": "X-Amz-Security-Token", "date": "X-Amz-Date", "expires": "X-Amz-Expires"}
        elif handler.method == "POST" and one("x-amz-credential"):
            names = {"credential": "x-amz-credential", "signature": "x-amz-signature"}
            names |= {"token": "x-amz-security-token", "policy": "policy", "tagging": "tagging", "key": "key"}
        else:
            return None
        return {name: one(field) for name, field in names.items()}

    def check_signature(self) -> None:
        if time.time() > self._expires_at():
            self._raise_access_denied()  # AWS: AccessDenied, "Request has expired"
        expected = self._policy_signature() if "policy" in self._signed else self._query_signature()
        if not hmac.compare_digest(expected, self._signed["signature"]):
            self._raise_signature_does_not_match()

    def _expires_at(self) -> float:
        if "policy" in self._signed:
            expiration = json.loads(base64.b64decode(self._signed["policy"])).get("expiration")
            if not isinstance(expiration, str):
                return 0.0  # AWS: a policy must say when it expires
            return datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
        signed_at = datetime.strptime(self._signed["date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return signed_at.timestamp() + int(self._signed["expires"])

    def _policy_signature(self) -> str:
        """SigV4 of a POST policy: the base64 policy document, signed with the credential scope's key."""
        _, date, region, service, _ = self._signed["credential"].split("/")
        key = ("AWS4" + self._access_key.create_credentials().secret_key).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return hmac.new(key, self._signed["policy"].encode(), hashlib.sha256).hexdigest()

    def _query_signature(self) -> str:
        """SigV4 of a presigned URL, computed by botocore's own query signer over the URL as sent."""
        parts = urlsplit(self._url)
        query = "&".join(p for p in parts.query.split("&") if not p.startswith("X-Amz-Signature="))
        request = AWSRequest(method=self._method, url=urlunsplit((*parts[:3], query, "")))
        request.context["timestamp"] = self._signed["date"]
        auth = S3SigV4QueryAuth(
            self._access_key.create_credentials(), "s3", self._region, expires=int(self._signed["expires"])
        )
        return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


def enforce_like_aws(monkeypatch: pytest.MonkeyPatch, spool: Path) -> Record:
    """moto's IAM checks with DynamoDB and SQS authorized as AWS does, every decision recorded."""
    record = Record(spool)

    def authorize_dynamodb(handler: Any, resource: str = "*") -> None:
        body = getattr(handler, "body", None) or {}
        for action, arn in dynamodb_permissions(
            handler._get_action(), body, handler.region, handler.current_account
        ):
            handler._authenticate_and_authorize_action(_acting_as(action), arn)

    def authorize_sqs(handler: Any, resource: str = "*") -> None:
        action = handler._get_action()
        handler._authenticate_and_authorize_action(_acting_as(SQS_BATCHES.get(action, action)), resource)

    authorize_s3_as_moto = S3Response._authenticate_and_authorize_s3_action

    def authorize_s3(handler: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        signed = SignedInS3Request.of(handler)
        enforced = ActionAuthenticatorMixin.request_count >= moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        action = handler._get_action()
        if signed is None or not enforced:
            authorize_s3_as_moto(handler, bucket_name=bucket_name, key_name=key_name)
            if not enforced:
                return
        key = key_name or (signed or {}).get("key")  # a presigned POST names its key in its form
        also = []  # what AWS authorizes besides the request's own action (moto authorizes that alone)
        if signed is not None:
            also.append((action, bucket_name, key))
        if action == "PutObject" and key:
            if handler.headers.get("x-amz-tagging") or (signed or {}).get("tagging"):
                also.append(("PutObjectTagging", bucket_name, key))  # tags set with the object
            if source := handler.headers.get("x-amz-copy-source"):  # a CopyObject reads its source
                source_bucket, _, source_key = unquote(urlsplit(source).path).lstrip("/").partition("/")
                also.append(("GetObject", source_bucket, source_key))
        missing = action == "GetObject" and key and handler.method in ("GET", "HEAD")
        if missing and handler.backend.get_object(bucket_name, key) is None:
            also.append(("ListBucket", bucket_name, None))  # a missing key: 404 only with ListBucket
        for also_action, bucket, also_key in also:
            resource = f"arn:aws:s3:::{bucket}" + (f"/{also_key}" if also_key else "")
            if signed is not None:
                request = SignedInS3Request(handler, also_action, signed)
                request.check_signature()
                request.check_action_permitted(resource)
                continue
            handler.data["Action"] = also_action
            try:
                authorize_s3_as_moto(handler, bucket_name=bucket, key_name=also_key)
            finally:
                handler.data["Action"] = action

    def trusted(request: Any, role_arn: str) -> bool:
        key = request._access_key
        callers = [key.arn]
        if isinstance(key, AssumedRoleAccessKey):
            callers.insert(0, f"arn:{key.partition}:iam::{key.account_id}:role/{key._owner_role_name}")
        trust = IAMPolicy(request.backend.get_role_by_arn(role_arn).assume_role_policy_document)
        conditions = format_incoming_conditional_values(request._data)
        return any(
            trust.is_action_permitted(request._action, role_arn, caller, conditions)
            == PermissionResult.PERMITTED
            for caller in callers
        )

    assume_as_moto = TokenResponse.assume_role

    def assume_role(handler: Any) -> Any:
        credential = handler.headers.get("Authorization", "").partition("Credential=")[2].split("/")[0]
        chained = handler.backend.get_assumed_role_from_access_key(credential) is not None
        if chained and handler._get_int_param("DurationSeconds", 3600) > CHAINED_SESSION_SECONDS:
            raise STSValidationError(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
            )
        return assume_as_moto(handler)

    checked = IAMRequestBase.check_action_permitted

    def check_action_permitted(request: Any, resource: str) -> None:
        role = request._access_key.arn.split(":assumed-role/")[-1].split("/")[0]
        try:
            checked(request, resource)
            policy = session_policy(request._access_key)
            if policy and IAMPolicy(policy).is_action_permitted(request._action, resource) != (
                PermissionResult.PERMITTED
            ):
                request._raise_access_denied()
        except Exception:
            record.decided(Decision(role, request._action, resource, False))
            raise
        record.decided(Decision(role, request._action, resource, True))

    call = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        try:
            return call(client, operation, params)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
                record.refused(f"{client.meta.service_model.service_name}.{operation}: {error}")
            raise

    monkeypatch.setattr(DynamoHandler, "_authenticate_and_authorize_normal_action", authorize_dynamodb)
    monkeypatch.setattr(SQSResponse, "_authenticate_and_authorize_normal_action", authorize_sqs)
    monkeypatch.setattr(S3Response, "_authenticate_and_authorize_s3_action", authorize_s3)
    monkeypatch.setattr(IAMRequestBase, "_check_role_trust_relationship", trusted)
    monkeypatch.setattr(TokenResponse, "assume_role", assume_role)
    monkeypatch.setattr(IAMRequestBase, "check_action_permitted", check_action_permitted)
    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return record


def session_policy(access_key: Any) -> str | None:
    """The policy a role session was assumed with (AssumeRole's `Policy`), if any."""
    if not isinstance(access_key, AssumedRoleAccessKey):
        return None
    backend = sts_backends[access_key.account_id][access_key.partition]
    assumed = backend.get_assumed_role_from_access_key(access_key._access_key_id)
    return assumed.policy if assumed else None


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
    roles: dict[str, str] = {}  # the presign role, by its ARN
    for function in resources(template, "AWS::Lambda::Function").values():
        for name, value in function["Properties"].get("Environment", {}).get("Variables", {}).items():
            if isinstance(value, dict) and list(value) == ["Ref"]:
                referenced[value["Ref"]] = name
            elif (
                isinstance(value, dict) and list(value) == ["Fn::GetAtt"] and value["Fn::GetAtt"][1] == "Arn"
            ):
                assert template["Resources"][value["Fn::GetAtt"][0]]["Type"] == "AWS::IAM::Role", name
                roles[value["Fn::GetAtt"][0]] = name
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
    for logical, variable in roles.items():  # provisioned locally (runplane.local.provision)
        found[logical] = {"Ref": env[variable].rsplit("/", 1)[-1], "Arn": env[variable]}
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
    """A cold start: the adapters' clients, a run's own S3 clients and the presign sessions made anew,
    from the credentials in the environment (a Lambda function's are its role's)."""
    aws.session.cache_clear()
    aws._client.cache_clear()
    resource_files._blobs.clear()  # (a run's S3 client, one a process)
    services.reset()


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
        arns = {}
        for function, role in function_roles(template).items():
            properties = template["Resources"][role]["Properties"]
            arns[function] = iam.create_role(
                RoleName=self.role_name(function),
                AssumeRolePolicyDocument=json.dumps(properties["AssumeRolePolicyDocument"]),
                Description=properties.get("Description", ""),
            )["Role"]["Arn"]
            self.attributes[role] = {"Ref": self.role_name(function), "Arn": arns[function]}
        # the presign role local mode provisions, given the template's trust and policies
        self.presigner = env[PRESIGN_ROLE_ENV].rsplit("/", 1)[-1]
        [presigner] = [k for k, a in self.attributes.items() if a["Arn"] == env[PRESIGN_ROLE_ENV]]
        properties = template["Resources"][presigner]["Properties"]
        iam.update_assume_role_policy(
            RoleName=self.presigner,
            PolicyDocument=json.dumps(resolve(properties["AssumeRolePolicyDocument"], self.attributes)),
        )
        for name in iam.list_role_policies(RoleName=self.presigner)["PolicyNames"]:
            iam.delete_role_policy(RoleName=self.presigner, PolicyName=name)
        self.documents[PRESIGNER] = {
            name: resolve(document, self.attributes)
            for name, document in role_policies(template, presigner).items()
        }
        self.grant(PRESIGNER)
        for function, role in function_roles(template).items():
            self.documents[function] = {
                name: resolve(document, self.attributes)
                for name, document in role_policies(template, role).items()
            }
            self.grant(function)
            assumed = sts.assume_role(RoleArn=arns[function], RoleSessionName=function)["Credentials"]
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
        """Put the role's policies in place (`function` PRESIGNER: the presign role's); `without`: drop
        every resource starting with that ARN (a policy left with no statement is removed)."""
        iam = boto3.client("iam")
        role = self.presigner if function == PRESIGNER else self.role_name(function)
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
            if not statements:
                if name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                    iam.delete_role_policy(RoleName=role, PolicyName=name)
                continue
            iam.put_role_policy(
                RoleName=role,
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
            self.record.gather()
            phase.decisions = self.record.decisions[decisions:]
            phase.refusals = self.record.refusals[refusals:]
        if not refusals_expected:
            denied = [d for d in phase.decisions if not d.allowed]
            assert denied == [], f"{function} was refused: {denied}"
            assert phase.refusals == [], f"{function} was refused: {phase.refusals}"
            # (sessions of the presign role sign resources' URLs: their requests are checked as well)
            others = {d.principal for d in phase.decisions} - {self.role_name(function), self.presigner}
            assert others == set(), f"requests signed by {others} while {function} was acting"


@pytest.fixture
def roles(
    template: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Roles:
    record = enforce_like_aws(monkeypatch, tmp_path / "decisions.jsonl")
    return Roles(template, env, record)


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of storage in play: payloads past 1 KiB go to S3, the rate limit counts every request (a
    burst of 8 is counted by shares of one; windows of 8 ms refuse none), loopback receivers are allowed,
    callbacks retry quickly."""
    for name, value in {
        "RUNPLANE_INLINE_LIMIT_BYTES": "1024",
        "RUNPLANE_RATE_LIMIT_BURST": "8",
        "RUNPLANE_RATE_LIMIT_PER_SECOND": "1000",
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
    not write them (nor learn that one is missing: it may not list the bucket). If moto stopped enforcing
    any of it, every other test here would prove nothing."""
    boto3.client("s3").put_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/some", Body=b"{}")
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
        s3.get_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/some")
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
            # allowed to get it, but not to list the bucket: a missing key is 403, not 404
            lambda: s3.get_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/none"),
        ):
            with pytest.raises(ClientError) as caught:
                refused()
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    allowed = {(d.action, d.resource.rsplit(":", 1)[-1], d.allowed) for d in phase.decisions}
    assert allowed == {
        ("dynamodb:GetItem", "table/test-runs", True),
        ("dynamodb:Query", "table/test-runs/index/by_account", True),
        ("sqs:SendMessage", "test-callbacks-dlq", True),
        ("s3:GetObject", "test-payloads/acme/some", True),
        ("dynamodb:PutItem", "table/test-runs", False),
        ("dynamodb:Query", "table/test-api_keys/index/by_account", False),
        ("dynamodb:PutItem", "table/test-runs", False),  # the transaction's Put
        ("sqs:SendMessage", "test-dispatch", False),
        ("s3:PutObject", "test-payloads/acme/x", False),
        ("s3:GetObject", "test-payloads/acme/none", True),
        ("s3:ListBucket", "test-payloads", False),
    }
    assert len(phase.refusals) == 6


def test_moto_decides_presigned_urls_and_forms_by_their_signer_and_signature(
    roles: Roles, env: dict[str, str]
) -> None:
    """A presigned GET and a presigned POST are authorized for the session that signed them (here: allowed
    acme's resources, with a tagged form needing PutObjectTagging too); one whose signature does not match,
    or that expired, is refused before any policy is read."""
    bucket = env["RUNPLANE_PAYLOAD_BUCKET"]
    boto3.client("s3").put_object(Bucket=bucket, Key="acme/resources/r", Body=b"x")
    with roles.acting("api", refusals_expected=True) as phase:
        signer = _presign_session(env, "acme")
        url = signer.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "acme/resources/r"}
        )
        assert requests.get(url, timeout=10).content == b"x"
        tampered = url.replace("acme/resources/r", "acme/resources/s")
        assert requests.get(tampered, timeout=10).status_code == 403  # signed for another key
        brief = signer.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "acme/resources/r"}, ExpiresIn=1
        )
        form = signer.generate_presigned_post(
            bucket, "acme/resources/f", Fields={"tagging": TAGGING_XML}, Conditions=[{"tagging": TAGGING_XML}]
        )
        assert upload(form, b"y").status_code == 204
        policy = json.loads(base64.b64decode(form["fields"]["policy"]))
        loosened = base64.b64encode(json.dumps({**policy, "conditions": []}).encode()).decode()
        forged = {**form, "fields": {**form["fields"], "policy": loosened}}
        assert upload(forged, b"y").status_code == 403  # its policy changed: the signature no longer matches
        time.sleep(2.1)  # (X-Amz-Date has whole seconds)
        assert requests.get(brief, timeout=10).status_code == 403
    assert [(d.principal, d.action, d.resource.rsplit(":::", 1)[-1], d.allowed) for d in phase.decisions] == [
        (Roles.role_name("api"), "sts:AssumeRole", env[PRESIGN_ROLE_ENV], True),
        (roles.presigner, "s3:GetObject", f"{bucket}/acme/resources/r", True),
        (roles.presigner, "s3:PutObject", f"{bucket}/acme/resources/f", True),
        (roles.presigner, "s3:PutObjectTagging", f"{bucket}/acme/resources/f", True),
    ]


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
    # outcomes are put with their expiry tag: PutObjectTagging, as AWS authorizes a PutObject with tags
    assert {a for a, _ in phase.used("s3")} == {"s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"}


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
    # a delivery waiting for a retry (so in the overdue index) whose message was lost
    called = start(api, echo, {"callback_url": "https://hooks.example.com/y"})
    with roles.acting("worker"):
        consume("worker")
    sqs.purge_queue(QueueUrl=env["RUNPLANE_CALLBACKS_QUEUE_URL"])
    boto3.client("dynamodb").update_item(
        TableName=env["RUNPLANE_CALLBACKS_TABLE"],
        Key={"pk": {"S": f"acme#{called}"}, "id": {"S": delivery_id_for(called)}},
        UpdateExpression="SET next_attempt_at = :t, pending_shard = :shard",
        ExpressionAttributeValues={
            ":t": {"N": str(now - 16 * 60)},
            ":shard": {"S": due_shard(delivery_id_for(called))},
        },
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


# --- resources: their routes, runs naming them, their bytes read and presigned, as each role ---

TEXT = b"resource bytes\n"
CSV = b"a,b\n1,2\n"


def data_uri(data: bytes, media_type: str = "text/plain") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def inline(name: str, data: bytes = TEXT) -> dict[str, Any]:
    """A resource made with a run: `{name, directory_path, content}`."""
    return {"name": name, "directory_path": "", "content": data_uri(data)}


def created(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    reply = api.post("/v1/resources", body)
    assert reply.status == 201, reply.text
    return reply.json()


def upload(form: dict[str, Any], data: bytes) -> requests.Response:
    """What a caller does with an upload form: its fields, then the file, as multipart/form-data."""
    return requests.post(form["url"], data=form["fields"], files={"file": ("file", data)}, timeout=10)


@contextmanager
def serving(data: bytes, content_type: str) -> Iterator[str]:
    """A file server on loopback (the `settings` fixture allows loopback destinations): its URL."""
    with files_serving({"/table.csv": Served(headers={"Content-Type": content_type}, body=data)}) as server:
        yield server.url("/table.csv")


def run_resources(run_id: str) -> dict[str, dict[str, Any]]:
    """What the run keeps of its resources (its payload), by the name the run gave each."""
    from runplane.logic.runs import load_payload

    return {r["name"]: r["resource"] for r in load_payload(run_record(run_id))["resources"]}


def resource_decisions(phase: Phase) -> set[tuple[str, str, str, bool]]:
    """(principal, action, what, allowed) of the phase's decisions on resources: their table (`table`),
    their objects (`<account>/resources/<id>`), the bucket listed (`bucket`: to learn an object is missing)
    and the presign role (`presigner`)."""
    found = set()
    for d in phase.decisions:
        if ":table/test-resources" in d.resource:
            what = "table"
        elif d.action.startswith("s3:") and "/resources/" in d.resource:
            what = d.resource.split(":::", 1)[1].split("/", 1)[1]
        elif d.action == "sts:AssumeRole":
            what = "presigner"
        elif d.action == "s3:ListBucket":
            what = "bucket"
        else:
            continue
        found.add((d.principal, d.action, what, d.allowed))
    return found


@pytest.mark.usefixtures("settings")
def test_the_api_role_serves_every_resources_route(roles: Roles, account: CreatedKey) -> None:
    """Made from content, from a uri (a loopback file server) and by an upload the caller POSTs to S3
    (signed by a presign session: the presign role's policies and the session's policy authorize it), read
    while pending and once its bytes arrived, listed, read (its download URL fetched), deleted; a run
    naming one and carrying another."""
    api = Api(account.token)
    echo = make_runnable("acme", "echo")
    with serving(CSV, "text/csv") as uri, roles.acting("api") as phase:
        made = created(api, {"name": "note.txt", "directory_path": "in", "content": data_uri(TEXT)})
        fetched = created(api, {"name": "table.csv", "directory_path": "in", "uri": uri})
        assert (fetched["source"], fetched["size"]) == ("uri", len(CSV))
        started = api.post(
            "/v1/resources/uploads", {"name": "up.csv", "directory_path": "in", "content_type": "text/csv"}
        )
        assert started.status == 201, started.text
        uploaded = started.json()["resource"]
        pending = api.get(f"/v1/resources/{uploaded['id']}")  # nothing arrived: a missing key, 404
        assert (pending.status, pending.json()["status"]) == (200, "pending"), pending.text
        sent = upload(started.json()["upload"], CSV)
        assert sent.status_code in (200, 201, 204), sent.text
        finished = api.get(f"/v1/resources/{uploaded['id']}")  # finishes the upload
        assert (finished.status, finished.json()["status"]) == (200, "ready"), finished.text
        listed = api.get("/v1/resources?directory_path=in")
        assert listed.status == 200, listed.text
        assert {r["id"] for r in listed.json()["items"]} == {made["id"], fetched["id"], uploaded["id"]}
        got = api.get(f"/v1/resources/{made['id']}")
        assert got.status == 200, got.text
        download = requests.get(got.json()["download_url"], timeout=10)
        assert (download.status_code, download.content) == (200, TEXT)
        resources = [
            {"name": "named", "resource": {"id": fetched["id"]}},
            {"name": "carried", "resource": inline("carried.txt")},
        ]
        run_id = start(api, echo, {"resources": resources})
        assert api.call("DELETE", f"/v1/resources/{made['id']}").status == 204
    carried = run_resources(run_id)["carried"]["id"]
    api_role, presigner = Roles.role_name("api"), roles.presigner
    made_key, upload_key = (f"acme/resources/{i}" for i in (made["id"], uploaded["id"]))
    table = {
        (api_role, f"dynamodb:{action}", "table", True)
        for action in ("PutItem", "GetItem", "Query", "BatchGetItem", "DeleteItem")
    }
    stored = {  # content, a fetched uri, a resource carried by a run: put with their expiry tag
        (api_role, action, f"acme/resources/{i}", True)
        for i in (made["id"], fetched["id"], carried)
        for action in ("s3:PutObject", "s3:PutObjectTagging")
    }
    staged = f"{upload_key}.upload"  # where the form puts the bytes (logic.resources.upload_key)
    assert resource_decisions(phase) == table | stored | {
        (api_role, "sts:AssumeRole", "presigner", True),
        (api_role, "s3:ListBucket", "bucket", True),  # the pending upload's missing object: 404, not 403
        (presigner, "s3:PutObject", staged, True),  # the upload, with its expiry tag
        (presigner, "s3:PutObjectTagging", staged, True),
        (api_role, "s3:GetObject", staged, True),  # its head, checked; then copied to the resource's key
        (api_role, "s3:PutObject", upload_key, True),
        (api_role, "s3:PutObjectTagging", upload_key, True),
        (api_role, "s3:DeleteObject", staged, True),
        (presigner, "s3:GetObject", made_key, True),  # the download URL
        (api_role, "s3:DeleteObject", made_key, True),
    }


@pytest.mark.usefixtures("settings")
def test_the_intake_role_accepts_a_message_naming_and_carrying_resources(
    roles: Roles, account: CreatedKey
) -> None:
    """Named resources are checked, an upload that arrived finished (checked, copied to its key, its staged
    object deleted: as the api does), a carried resource stored; a message naming an upload that has not
    arrived is parked."""
    api = Api(account.token)
    echo = make_runnable("acme", "echo")
    named = created(api, {"name": "n.txt", "directory_path": "", "content": data_uri(TEXT)})
    started = api.post(
        "/v1/resources/uploads", {"name": "u.csv", "directory_path": "", "content_type": "text/csv"}
    )
    assert started.status == 201, started.text
    uploaded = started.json()["resource"]
    assert upload(started.json()["upload"], CSV).status_code in (200, 201, 204)
    message = {
        "account_id": "acme",
        "runnable_id": echo,
        "resources": [
            {"name": "named", "resource": {"id": named["id"]}},
            {"name": "uploaded", "resource": {"id": uploaded["id"]}},
            {"name": "carried", "resource": inline("carried.txt", CSV)},
        ],
    }
    waiting = api.post("/v1/resources/uploads", {"name": "w.txt", "directory_path": ""}).json()["resource"]
    early = {**message, "resources": [{"name": "waiting", "resource": {"id": waiting["id"]}}]}
    sqs = boto3.client("sqs")
    sent = sqs.send_message(QueueUrl=os.environ["RUNPLANE_INTAKE_QUEUE_URL"], MessageBody=json.dumps(message))
    sqs.send_message(QueueUrl=os.environ["RUNPLANE_INTAKE_QUEUE_URL"], MessageBody=json.dumps(early))
    with roles.acting("intake") as phase:
        assert consume("intake") == 2
    [parked] = queued("RUNPLANE_INTAKE_DLQ_URL")  # its upload has not arrived
    assert parked["MessageAttributes"]["runplane-error-code"]["StringValue"] == "resource_not_found"
    run_id = intake_run_id(sent["MessageId"])
    assert run_record(run_id).status.value == "waiting"
    seen = run_resources(run_id)
    assert (seen["named"]["id"], seen["uploaded"]["id"]) == (named["id"], uploaded["id"])
    assert api.get(f"/v1/resources/{uploaded['id']}").json()["status"] == "ready"
    carried, finished = (f"acme/resources/{seen[n]['id']}" for n in ("carried", "uploaded"))
    intake = Roles.role_name("intake")
    assert resource_decisions(phase) == {
        (intake, "dynamodb:BatchGetItem", "table", True),  # the named ones, checked
        (intake, "dynamodb:PutItem", "table", True),  # the carried one, and the upload made ready
        (intake, "s3:GetObject", f"{finished}.upload", True),  # the upload: its head, its copy's source
        (intake, "s3:PutObject", finished, True),
        (intake, "s3:PutObjectTagging", finished, True),
        (intake, "s3:DeleteObject", f"{finished}.upload", True),
        (intake, "s3:GetObject", f"acme/resources/{waiting['id']}.upload", True),  # missing: 404, not 403
        (intake, "s3:ListBucket", "bucket", True),
        (intake, "s3:PutObject", carried, True),
        (intake, "s3:PutObjectTagging", carried, True),
    }


@pytest.mark.usefixtures("settings")
def test_the_worker_role_reads_resources_and_presigns_them_for_agents(
    roles: Roles, account: CreatedKey
) -> None:
    """A python run reads its resources' bytes (in the forked child that runs its code, with its own S3
    client), and one whose resource was deleted fails saying so; an http run's envelope carries presigned
    URLs, signed by a session of the presign role the worker assumes, and the agent can fetch them."""
    api = Api(account.token)
    named = created(api, {"name": "n.txt", "directory_path": "in", "content": data_uri(TEXT)})
    resources = [
        {"name": "named", "resource": {"id": named["id"]}},
        {"name": "carried", "resource": inline("carried.csv", CSV)},
    ]
    describe = make_runnable("acme", "describe_files")
    final = json.dumps({"outputs": {"seen": True}}).encode()
    with receiving(Answer(200, {"Content-Type": "application/json"}, body=final)) as agent:
        body = {"name": "agent", "kind": "http", "config": {"url": agent.url}}
        reply = api.post("/v1/runnables", body)
        assert reply.status == 201, reply.text
        python = start(api, describe, {"resources": resources})
        http = start(api, reply.json()["id"], {"resources": resources})
        doomed = created(api, {"name": "d.txt", "directory_path": "", "content": data_uri(TEXT)})
        late = start(api, describe, {"resources": [{"name": "doomed", "resource": {"id": doomed["id"]}}]})
        assert api.call("DELETE", f"/v1/resources/{doomed['id']}").status == 204
        with roles.acting("worker") as phase:
            assert consume("worker") == 3
            [envelope] = [json.loads(r.body) for r in agent.received]
            fetched = {
                name: requests.get(described["url"], timeout=10).content
                for name, described in envelope["resources"].items()
            }
    assert fetched == {"named": TEXT, "carried": CSV}
    assert state(api, http)["status"] == "completed"
    outputs = state(api, python)["result"]["outputs"]
    assert (outputs["named"]["text"], outputs["named"]["path"], outputs["named"]["same"]) == (
        TEXT.decode(),
        "in/n.txt",
        True,
    )
    assert (outputs["carried"]["text"], outputs["carried"]["same"]) == (CSV.decode(), True)
    assert state(api, late)["status"] == "failed"
    assert doomed["id"] in state(api, late)["result"]["error"]["message"]  # deleted: 404, not 403
    worker, presigner = Roles.role_name("worker"), roles.presigner
    read, signed = ({f"acme/resources/{r['id']}" for r in run_resources(i).values()} for i in (python, http))
    assert resource_decisions(phase) == {
        *((worker, "s3:GetObject", key, True) for key in read),  # by the python run's code, forked
        (worker, "s3:GetObject", f"acme/resources/{doomed['id']}", True),
        (worker, "s3:ListBucket", "bucket", True),  # which learns it was deleted
        (worker, "sts:AssumeRole", "presigner", True),
        *((presigner, "s3:GetObject", key, True) for key in signed),  # the agent, with the envelope's URLs
    }


@pytest.mark.usefixtures("settings")
@pytest.mark.parametrize("function", ["api", "worker"])
def test_a_presign_session_reaches_its_accounts_resources_only(
    roles: Roles, account: CreatedKey, env: dict[str, str], function: str
) -> None:
    """The URLs the application signs for account A (its Presigner, as the api and the worker use it),
    whatever key they name: B's resource cannot be read nor uploaded to, nor A's run payloads read."""
    mine = created(Api(account.token), {"name": "a.txt", "directory_path": "", "content": data_uri(TEXT)})
    other = Api(keys.create_key("other", scopes=["admin"]).token)
    theirs = created(other, {"name": "b.txt", "directory_path": "", "content": data_uri(TEXT)})
    run_id = start(Api(account.token), make_runnable("acme", "echo"), {"inputs": LARGE})
    payload = run_record(run_id).payload_ref
    assert payload is not None, "the run's inputs are kept in the payload bucket"
    assert not payload.startswith("acme/resources/")
    mine_key, theirs_key = resource_key("acme", mine["id"]), resource_key("other", theirs["id"])
    with roles.acting(function, refusals_expected=True) as phase:
        presigner = services.services().presigner
        assert requests.get(presigner.get_url("acme", mine_key, 60), timeout=10).content == TEXT
        for key in (theirs_key, payload):
            assert requests.get(presigner.get_url("acme", key, 60), timeout=10).status_code == 403
        form = presigner.post_form(
            "acme", theirs_key, content_type="text/plain", sizes=(0, 100), tagging="", seconds=60
        )
        assert upload(form, b"overwritten").status_code == 403
    assert (
        boto3.client("s3").get_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key=theirs_key)["Body"].read()
        == TEXT
    )
    assert _s3_decisions(phase, env["RUNPLANE_PAYLOAD_BUCKET"]) == {
        (roles.presigner, "s3:GetObject", mine_key, True),
        (roles.presigner, "s3:GetObject", theirs_key, False),
        (roles.presigner, "s3:GetObject", payload, False),
        (roles.presigner, "s3:PutObject", theirs_key, False),
    }
    assert {d.action for d in phase.decisions if d.principal == Roles.role_name(function)} == {
        "sts:AssumeRole"
    }


# --- what each role must be refused ---


def _dynamodb(operation: str, env_var: str, **extra: Any) -> Callable[[dict[str, str]], Any]:
    def call(env: dict[str, str]) -> Any:
        key = {"pk": {"S": "acme#x"}} if env_var != "RUNPLANE_KEYS_TABLE" else {"id": {"S": "k"}}
        if env_var in ("RUNPLANE_RUNNABLES_TABLE", "RUNPLANE_RESOURCES_TABLE"):
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
        if operation == "DeleteItem":
            return client.delete_item(TableName=env[env_var], Key=key)
        if operation == "BatchGetItem":  # as a run naming resources reads them
            return client.batch_get_item(RequestItems={env[env_var]: {"Keys": [key]}})
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


def _delete_resource_bytes(env: dict[str, str]) -> Any:
    return aws.client("s3").delete_object(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"], Key="acme/resources/r")


def _assume_presigner(env: dict[str, str]) -> Any:
    return aws.client("sts").assume_role(RoleArn=env[PRESIGN_ROLE_ENV], RoleSessionName="presign-acme")


REFUSED = [
    ("api", "send to the intake DLQ", _send("RUNPLANE_INTAKE_DLQ_URL")),
    ("api", "receive from dispatch", _receive("RUNPLANE_DISPATCH_QUEUE_URL")),
    ("api", "delete a payload", _delete_payload),
    ("intake", "delete a payload", _delete_payload),
    ("intake", "assume the presign role", _assume_presigner),
    ("worker", "write the resources table", _dynamodb("PutItem", "RUNPLANE_RESOURCES_TABLE")),
    ("worker", "read the resources table", _dynamodb("GetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("worker", "delete from the resources table", _dynamodb("DeleteItem", "RUNPLANE_RESOURCES_TABLE")),
    ("worker", "batch-read the resources table", _dynamodb("BatchGetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("worker", "delete a resource's bytes", _delete_resource_bytes),
    ("dead_letters", "read the resources table", _dynamodb("GetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("dead_letters", "batch-read the resources table", _dynamodb("BatchGetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("dead_letters", "assume the presign role", _assume_presigner),
    ("sweeper", "read the resources table", _dynamodb("GetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("sweeper", "batch-read the resources table", _dynamodb("BatchGetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("sweeper", "delete a resource's bytes", _delete_resource_bytes),
    ("sweeper", "assume the presign role", _assume_presigner),
    ("callbacks", "read the resources table", _dynamodb("GetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("callbacks", "batch-read the resources table", _dynamodb("BatchGetItem", "RUNPLANE_RESOURCES_TABLE")),
    ("callbacks", "assume the presign role", _assume_presigner),
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


# --- resources: presign sessions, tagged objects (static probes: the resource code paths come next) ---


def _presign_session(
    env: dict[str, str], account_id: str, actions: list[str] | None = None, seconds: int = 3600
) -> BaseClient:
    """An S3 client signing as the presign role, assumed (with the acting role's credentials) with a
    session policy for `account_id`'s resources, as runplane.adapters.presigner does."""
    resource = f"arn:aws:s3:::{env['RUNPLANE_PAYLOAD_BUCKET']}/{account_id}/resources/*"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": actions or ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"],
                "Resource": resource,
            }
        ],
    }
    credentials = aws.client("sts").assume_role(
        RoleArn=env[PRESIGN_ROLE_ENV],
        RoleSessionName=f"presign-{account_id}",
        Policy=json.dumps(policy),
        DurationSeconds=seconds,
    )["Credentials"]
    return boto3.client(
        "s3",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=Config(signature_version="s3v4"),  # as the presigner signs: SigV4 in the query string
    )


def _s3_decisions(phase: Phase, bucket: str) -> set[tuple[str, str, str, bool]]:
    """(principal, action, key, allowed) of the phase's S3 decisions."""
    prefix = f"arn:aws:s3:::{bucket}/"
    return {
        (d.principal, d.action, d.resource.removeprefix(prefix), d.allowed)
        for d in phase.decisions
        if d.action.startswith("s3:")
    }


EXPIRING = f"{defs.EXPIRY_TAG}=resource"
TAGGING_XML = (  # EXPIRING, as an upload form carries it
    f"<Tagging><TagSet><Tag><Key>{defs.EXPIRY_TAG}</Key><Value>resource</Value></Tag></TagSet></Tagging>"
)


@pytest.mark.parametrize("function", ["api", "worker"])
def test_the_api_and_worker_presign_with_sessions_reaching_only_the_accounts_resources(
    roles: Roles, env: dict[str, str], function: str
) -> None:
    bucket = env["RUNPLANE_PAYLOAD_BUCKET"]
    with roles.acting(function, refusals_expected=True) as phase:
        signer = _presign_session(env, "acme")
        signer.put_object(Bucket=bucket, Key="acme/resources/r1", Body=b"x", Tagging=EXPIRING)
        assert signer.get_object(Bucket=bucket, Key="acme/resources/r1")["Body"].read() == b"x"
        for refused in (
            lambda: signer.put_object(Bucket=bucket, Key="other/resources/r1", Body=b"x"),  # the session
            lambda: signer.get_object(Bucket=bucket, Key="other/resources/r1"),
            lambda: signer.put_object(Bucket=bucket, Key="acme/resources", Body=b"x"),
            lambda: signer.delete_object(Bucket=bucket, Key="acme/resources/r1"),  # the role
        ):
            with pytest.raises(ClientError) as caught:
                refused()
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    [assumed] = [d for d in phase.decisions if d.action == "sts:AssumeRole"]
    assert (assumed.principal, assumed.resource, assumed.allowed) == (
        Roles.role_name(function),
        env[PRESIGN_ROLE_ENV],
        True,
    )
    presigner = roles.presigner
    assert _s3_decisions(phase, bucket) == {
        (presigner, "s3:PutObject", "acme/resources/r1", True),
        (presigner, "s3:PutObjectTagging", "acme/resources/r1", True),
        (presigner, "s3:GetObject", "acme/resources/r1", True),
        (presigner, "s3:PutObject", "other/resources/r1", False),
        (presigner, "s3:GetObject", "other/resources/r1", False),
        (presigner, "s3:PutObject", "acme/resources", False),
        (presigner, "s3:DeleteObject", "acme/resources/r1", False),
    }
    assert len(phase.refusals) == 4


def test_a_function_assumes_the_presign_role_for_an_hour_at_most(roles: Roles, env: dict[str, str]) -> None:
    """A function's credentials are a session of its role: assuming another role with them is role
    chaining, which AWS caps at one hour whatever the role's MaxSessionDuration (12 h). So no presigned URL
    can outlive an hour, and asking for a longer session fails the AssumeRole."""
    with roles.acting("api"):
        _presign_session(env, "acme", seconds=CHAINED_SESSION_SECONDS)
        with pytest.raises(ClientError) as caught:
            _presign_session(env, "acme", seconds=CHAINED_SESSION_SECONDS + 1)
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "role chaining" in caught.value.response["Error"]["Message"]


def test_the_presign_roles_trust_refuses_a_role_it_does_not_name_even_one_allowed_to_assume_it(
    roles: Roles, env: dict[str, str]
) -> None:
    allowed = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": env[PRESIGN_ROLE_ENV]}],
    }
    boto3.client("iam").put_role_policy(
        RoleName=Roles.role_name("intake"), PolicyName="assume", PolicyDocument=json.dumps(allowed)
    )
    with roles.acting("intake", refusals_expected=True) as phase, pytest.raises(ClientError):
        _assume_presigner(env)
    assert phase.decisions == [
        Decision(Roles.role_name("intake"), "sts:AssumeRole", env[PRESIGN_ROLE_ENV], False)
    ]


def test_a_tagged_put_needs_put_object_tagging_and_a_session_policy_narrows_the_role(
    roles: Roles, env: dict[str, str]
) -> None:
    """What moto would let pass unchecked: a session allowed PutObject alone puts untagged objects only
    (AWS requires s3:PutObjectTagging for a PutObject with tags); its policy removes what the role has."""
    bucket = env["RUNPLANE_PAYLOAD_BUCKET"]
    with roles.acting("api", refusals_expected=True) as phase:
        signer = _presign_session(env, "acme", actions=["s3:PutObject"])
        signer.put_object(Bucket=bucket, Key="acme/resources/pinned", Body=b"x")
        for refused in (
            lambda: signer.put_object(Bucket=bucket, Key="acme/resources/r2", Body=b"x", Tagging=EXPIRING),
            lambda: signer.get_object(Bucket=bucket, Key="acme/resources/pinned"),
        ):
            with pytest.raises(ClientError) as caught:
                refused()
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert _s3_decisions(phase, bucket) == {
        (roles.presigner, "s3:PutObject", "acme/resources/pinned", True),
        (roles.presigner, "s3:PutObject", "acme/resources/r2", True),
        (roles.presigner, "s3:PutObjectTagging", "acme/resources/r2", False),
        (roles.presigner, "s3:GetObject", "acme/resources/pinned", False),
    }


@pytest.mark.parametrize("function", ["api", "intake", "worker", "dead_letters", "sweeper"])
def test_functions_that_put_objects_put_them_with_their_expiry_tag(
    roles: Roles, env: dict[str, str], function: str
) -> None:
    bucket = env["RUNPLANE_PAYLOAD_BUCKET"]
    with roles.acting(function) as phase:
        aws.client("s3").put_object(
            Bucket=bucket, Key="acme/run/payload.json", Body=b"{}", Tagging=f"{defs.EXPIRY_TAG}=run"
        )
        aws.client("s3").put_object(Bucket=bucket, Key="acme/resources/r3", Body=b"x", Tagging=EXPIRING)
    assert {(a, r.rsplit("/", 1)[-1]) for a, r in phase.used("s3:Put")} == {
        ("s3:PutObject", "payload.json"),
        ("s3:PutObjectTagging", "payload.json"),
        ("s3:PutObject", "r3"),
        ("s3:PutObjectTagging", "r3"),
    }


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


@pytest.mark.usefixtures("settings")
@pytest.mark.parametrize("taken", ["bucket", "presign role"])
def test_a_grant_taken_from_the_worker_fails_the_resources_runs_that_need_it(
    roles: Roles, account: CreatedKey, env: dict[str, str], taken: str
) -> None:
    """Without the bucket, a python run's code cannot read its resource (refused in the forked child that
    runs it); without the presign role, an http run's envelope cannot be signed."""
    api = Api(account.token)
    resources = [{"name": "carried", "resource": inline("carried.txt")}]
    with receiving(Answer(200, {"Content-Type": "application/json"}, b'{"outputs": {}}')) as agent:
        if taken == "bucket":
            run_id = start(api, make_runnable("acme", "describe_files"), {"resources": resources})
            arn = f"arn:aws:s3:::{env['RUNPLANE_PAYLOAD_BUCKET']}"
            key = run_resources(run_id)["carried"]["key"]
            missed = {("s3:GetObject", f"{arn}/{key}")}
        else:
            created_runnable = api.post(
                "/v1/runnables", {"name": "a", "kind": "http", "config": {"url": agent.url}}
            )
            assert created_runnable.status == 201, created_runnable.text
            run_id = start(api, created_runnable.json()["id"], {"resources": resources})
            arn = env[PRESIGN_ROLE_ENV]
            missed = {("sts:AssumeRole", arn)}
        roles.grant("worker", without=arn)
        with roles.acting("worker", refusals_expected=True) as phase:
            consume("worker")
        assert agent.received == []
    assert state(api, run_id)["status"] == "failed"
    assert {(d.action, d.resource) for d in phase.decisions if not d.allowed} == missed


@pytest.mark.usefixtures("settings")
def test_a_grant_taken_from_the_presign_role_refuses_its_uploads_and_downloads(
    roles: Roles, account: CreatedKey, env: dict[str, str]
) -> None:
    api = Api(account.token)
    made = created(api, {"name": "a.txt", "directory_path": "", "content": data_uri(TEXT)})
    roles.grant(PRESIGNER, without=f"arn:aws:s3:::{env['RUNPLANE_PAYLOAD_BUCKET']}")
    with roles.acting("api", refusals_expected=True) as phase:
        started = api.post("/v1/resources/uploads", {"name": "u.txt", "directory_path": ""})
        assert started.status == 201, started.text
        assert upload(started.json()["upload"], TEXT).status_code == 403
        download_url = api.get(f"/v1/resources/{made['id']}").json()["download_url"]
        assert requests.get(download_url, timeout=10).status_code == 403
    staged = f"acme/resources/{started.json()['resource']['id']}.upload"
    assert {(p, a, k) for p, a, k, allowed in resource_decisions(phase) if not allowed} == {
        (roles.presigner, "s3:PutObject", staged),
        (roles.presigner, "s3:GetObject", f"acme/resources/{made['id']}"),
    }


@pytest.mark.usefixtures("settings")
def test_a_grant_taken_from_the_api_fails_its_resources_requests(roles: Roles, account: CreatedKey) -> None:
    roles.grant("api", without=roles.arn("RUNPLANE_RESOURCES_TABLE"))
    with roles.acting("api", refusals_expected=True) as phase:
        try:
            reply = Api(account.token).post(
                "/v1/resources", {"name": "a", "directory_path": "", "content": data_uri(TEXT)}
            )
            status = reply.status
        except ClientError:
            status = 502  # an invocation error: API Gateway's answer
    assert status >= 500
    assert [d.action for d in phase.decisions if not d.allowed] == ["dynamodb:PutItem"]
