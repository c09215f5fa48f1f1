"""The synthesized template: every resource the local stack emulates, configured as a review expects."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runplane import definitions as defs

from tests.infra.conftest import API_TYPES, resources, synth

pytestmark = pytest.mark.infra


def by_handler(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f["Properties"]["Handler"]: f["Properties"]
        for f in resources(template, "AWS::Lambda::Function").values()
    }


def queue_named(template: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """Queues are found by their construct path (queues/<name>)."""
    for logical_id, queue in resources(template, "AWS::SQS::Queue").items():
        if queue["Metadata"]["aws:cdk:path"].endswith(f"/queues/{name}/Resource"):
            return logical_id, queue["Properties"]
    raise AssertionError(f"no queue {name}")


@pytest.mark.parametrize("api", API_TYPES)
def test_cdk_nag_finds_nothing_unsuppressed(synthesize: Any, api: str) -> None:
    from aws_cdk.assertions import Annotations, Match

    stack, _ = synthesize(api)
    annotations = Annotations.from_stack(stack)
    findings = annotations.find_error(
        "*", Match.string_like_regexp("AwsSolutions-.*")
    ) + annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [f.entry.data for f in findings] == []


def cfn_lint_errors(template: dict[str, Any], path: Path) -> list[str]:
    path.write_text(json.dumps(template))
    command = [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    findings = [line.split(":") for line in result.stdout.splitlines()]
    return [":".join(f[5:]) for f in findings if len(f) > 5 and f[5].startswith("E")]


@pytest.mark.parametrize("api", API_TYPES)
def test_cfn_lint_reports_no_errors(synthesize: Any, api: str, tmp_path: Path) -> None:
    assert cfn_lint_errors(
        {"Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"Bogus": 1}}}}, tmp_path / "bad.json"
    )
    assert cfn_lint_errors(synthesize(api)[1], tmp_path / "template.json") == []


def test_every_function_is_deployed_on_arm64_with_json_logs_tracing_and_retention(
    template: dict[str, Any],
) -> None:
    functions = by_handler(template)
    assert set(functions) == {f.handler for f in defs.FUNCTIONS}
    for spec in defs.FUNCTIONS:
        function = functions[spec.handler]
        assert function["Runtime"] == "python3.14"
        assert function["Architectures"] == ["arm64"]
        assert function["TracingConfig"] == {"Mode": "Active"}
        # platform lines only when they warn; the application's INFO lines (observability.LOG_LEVEL)
        assert function["LoggingConfig"] == {
            "LogFormat": "JSON",
            "SystemLogLevel": "WARN",
            "ApplicationLogLevel": "INFO",
            "LogGroup": function["LoggingConfig"]["LogGroup"],
        }
        assert function["Timeout"] == spec.timeout_seconds
        assert function["MemorySize"] == spec.memory_mb
        env = function["Environment"]["Variables"]
        assert {t.env_var for t in defs.TABLES} | {q.env_var for q in defs.QUEUES} <= set(env)
    retention = {
        g["Properties"].get("RetentionInDays") for g in resources(template, "AWS::Logs::LogGroup").values()
    }
    assert None not in retention


def test_queue_consumers_report_partial_batch_failures_with_bounded_concurrency(
    template: dict[str, Any],
) -> None:
    mappings = list(resources(template, "AWS::Lambda::EventSourceMapping").values())
    consumers = [f for f in defs.FUNCTIONS if f.queue]
    assert len(mappings) == len(consumers)
    for mapping in mappings:
        properties = mapping["Properties"]
        assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert properties["ScalingConfig"]["MaximumConcurrency"] >= 2
    assert sorted(m["Properties"]["BatchSize"] for m in mappings) == sorted(f.batch_size for f in consumers)


def test_queues_have_dead_letter_queues_encryption_and_visibility_beyond_their_consumers(
    template: dict[str, Any],
) -> None:
    for queue in defs.QUEUES:
        _logical_id, properties = queue_named(template, queue.name)
        assert properties["SqsManagedSseEnabled"] is True
        assert properties["MaximumMessageSize"] == queue.max_message_bytes
        assert properties["MessageRetentionPeriod"] == queue.retention_seconds
        if queue.dead_letter_queue:
            dlq_id, dlq = queue_named(template, queue.dead_letter_queue)
            assert properties["RedrivePolicy"] == {
                "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                "maxReceiveCount": queue.max_receive_count,
            }
            assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
        consumer = next((f for f in defs.FUNCTIONS if f.queue == queue.name), None)
        if consumer:
            assert properties["VisibilityTimeout"] >= 6 * consumer.timeout_seconds
    policies = resources(template, "AWS::SQS::QueuePolicy").values()
    denied_without_tls = [
        s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"
    ]
    assert len(denied_without_tls) == len(defs.QUEUES)


def test_tables_are_on_demand_recoverable_encrypted_and_indexed_as_the_code_queries(
    template: dict[str, Any],
) -> None:
    tables = list(resources(template, "AWS::DynamoDB::Table").values())
    assert len(tables) == len(defs.TABLES)
    for table in tables:
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert properties["SSESpecification"]["SSEEnabled"] is True
    with_ttl = {
        t["Properties"]["TimeToLiveSpecification"]["AttributeName"]
        for t in tables
        if "TimeToLiveSpecification" in t["Properties"]
    }
    assert with_ttl == {t.ttl_attribute for t in defs.TABLES if t.ttl_attribute}
    indexes = {i["IndexName"] for t in tables for i in t["Properties"].get("GlobalSecondaryIndexes", [])}
    assert indexes == {i.name for t in defs.TABLES for i in t.indexes}


def test_no_policy_grants_wildcard_actions(template: dict[str, Any]) -> None:
    actions = [
        action
        for policy in resources(template, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    ]
    assert actions
    data_services = ("dynamodb:", "sqs:", "s3:")
    assert [a for a in actions if a == "*" or (a.startswith(data_services) and "*" in a)] == []


def test_each_function_has_its_own_role_with_only_the_tables_it_uses(template: dict[str, Any]) -> None:
    from infra.functions import ACCESS

    roles = {
        f["Properties"]["Role"]["Fn::GetAtt"][0]
        for f in resources(template, "AWS::Lambda::Function").values()
    }
    assert len(roles) == len(defs.FUNCTIONS)
    assert set(ACCESS) == {f.name for f in defs.FUNCTIONS}
    policies = resources(template, "AWS::IAM::Policy").values()
    worker_policy = next(
        p
        for p in policies
        if p["Metadata"]["aws:cdk:path"].endswith("/functions/worker-role/DefaultPolicy/Resource")
    )
    text = json.dumps(worker_policy)
    for table in ("runs", "callbacks", "accounts", "concurrency", "runnables"):
        assert f"tables{table}" in text
    assert "tablesapikeys" not in text
    [runnables] = [
        s
        for s in worker_policy["Properties"]["PolicyDocument"]["Statement"]
        if "tablesrunnables" in json.dumps(s)
    ]
    assert sorted(runnables["Action"]) == ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"]


def test_the_bucket_is_private_tls_only_encrypted_and_expires_objects(template: dict[str, Any]) -> None:
    [bucket] = resources(template, "AWS::S3::Bucket").values()
    properties = bucket["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert lifecycle(template) == {
        # payloads and outcomes a week past their run; expiring resources' bytes a day past their record
        "run": 30 + 7,
        "resource": 30 + 1,
        # untagged objects (pinned resources) are kept; S3 allows no tag filter on this action
        "incomplete multipart uploads": 1,
    }
    [policy] = resources(template, "AWS::S3::BucketPolicy").values()
    [deny] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def lifecycle(template: dict[str, Any]) -> dict[str, int]:
    """The bucket's lifecycle rules: days to expiry by expiry tag value, and the multipart upload abort."""
    [bucket] = resources(template, "AWS::S3::Bucket").values()
    rules: dict[str, int] = {}
    for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]:
        assert rule["Status"] == "Enabled"
        assert "Prefix" not in rule
        assert "Filter" not in rule
        if "AbortIncompleteMultipartUpload" in rule:
            assert set(rule) == {"Id", "Status", "AbortIncompleteMultipartUpload"}
            rules["incomplete multipart uploads"] = rule["AbortIncompleteMultipartUpload"][
                "DaysAfterInitiation"
            ]
            continue
        assert set(rule) == {"Id", "Status", "TagFilters", "ExpirationInDays"}
        [tag] = rule["TagFilters"]
        assert tag["Key"] == defs.EXPIRY_TAG
        rules[tag["Value"]] = rule["ExpirationInDays"]
    return rules


def test_the_resources_table_is_keyed_by_account_and_expires_by_ttl(template: dict[str, Any]) -> None:
    [table] = [
        t["Properties"]
        for t in resources(template, "AWS::DynamoDB::Table").values()
        if t["Metadata"]["aws:cdk:path"].endswith("/tables/resources/Resource")
    ]
    assert table["KeySchema"] == [
        {"AttributeName": "account_id", "KeyType": "HASH"},
        {"AttributeName": "id", "KeyType": "RANGE"},
    ]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert "GlobalSecondaryIndexes" not in table
    grants = role_grants(template)
    table_actions = {
        role: {a for a, found in actions.items() if any("tablesresources" in r for r in found)}
        for role, actions in grants.items()
    }
    read_write = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
    read_write |= {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    assert {role: actions for role, actions in table_actions.items() if actions} == {
        "api": read_write,
        "intake": read_write,
    }


def role_grants(template: dict[str, Any]) -> dict[str, dict[str, set[str]]]:
    """By role (a function's name, or `presigner`): each action its policies allow, on what (rendered:
    `{"Fn::GetAtt":[...]}` and joined strings)."""
    grants: dict[str, dict[str, set[str]]] = {}
    for policy in resources(template, "AWS::IAM::Policy").values():
        path = policy["Metadata"]["aws:cdk:path"]
        role = path.split("/functions/")[1].split("/")[0].removesuffix("-role")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            found = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            rendered = {_rendered(r) for r in found}
            for action in listed:
                grants.setdefault(role, {}).setdefault(action, set()).update(rendered)
    return grants


def _rendered(value: Any) -> str:
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return _joined(value)
    return json.dumps(value, separators=(",", ":"))


def logical_id(template: dict[str, Any], path_suffix: str) -> str:
    [found] = [
        k for k, r in template["Resources"].items() if r["Metadata"]["aws:cdk:path"].endswith(path_suffix)
    ]
    return found


def test_objects_are_put_with_their_expiry_tag_and_only_resources_deleted(template: dict[str, Any]) -> None:
    """A PutObject with tags (the expiry tag) needs s3:PutObjectTagging too; the api and intake delete
    resources' bytes (a deleted resource, a bad upload), nothing else; those that read objects that may be
    missing may list the bucket (so S3 answers 404); no role deletes tags."""
    bucket = _rendered({"Fn::GetAtt": [logical_id(template, "/storage/payloads/Resource"), "Arn"]})
    objects, resource_objects = f"{bucket}/*", f"{bucket}/*/resources/*"
    lists = {"s3:ListBucket": {bucket}}  # a missing object is then 404, not 403
    s3_grants = {
        role: {a: found for a, found in actions.items() if a.startswith("s3:")}
        for role, actions in role_grants(template).items()
    }
    for role, actions in s3_grants.items():
        assert actions.get("s3:PutObjectTagging") == actions.get("s3:PutObject"), role
    put = {"s3:GetObject": {objects}, "s3:PutObject": {objects}, "s3:PutObjectTagging": {objects}}
    assert s3_grants == {
        "api": {**put, **lists, "s3:DeleteObject": {resource_objects}},
        "intake": {**put, **lists, "s3:DeleteObject": {resource_objects}},
        "worker": {**put, **lists},
        "dead_letters": {**put, **lists},
        "sweeper": {**put, **lists},
        "callbacks": {"s3:GetObject": {objects}},
        "presigner": {a: {resource_objects} for a in ("s3:GetObject", "s3:PutObject", "s3:PutObjectTagging")},
    }


def test_only_the_api_and_worker_may_assume_the_presign_role_which_reaches_only_resources(
    template: dict[str, Any],
) -> None:
    presigner = logical_id(template, "/functions/presigner/Resource")
    properties = template["Resources"][presigner]["Properties"]
    role_of = {name: logical_id(template, f"/functions/{name}-role/Resource") for name in ("api", "worker")}
    [trust] = properties["AssumeRolePolicyDocument"]["Statement"]
    assert (trust["Effect"], trust["Action"], set(trust)) == (
        "Allow",
        "sts:AssumeRole",
        {"Effect", "Action", "Principal"},
    )
    assert list(trust["Principal"]) == ["AWS"]
    admitted = sorted(p["Fn::GetAtt"] for p in trust["Principal"]["AWS"])
    assert admitted == sorted([[role_of["api"], "Arn"], [role_of["worker"], "Arn"]])
    assert properties["MaxSessionDuration"] == 12 * 3600
    assert not properties.get("ManagedPolicyArns")
    assert not properties.get("Policies")
    grants = role_grants(template)
    assert set(grants["presigner"]) == {"s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"}
    assumers = {
        role: actions["sts:AssumeRole"] for role, actions in grants.items() if "sts:AssumeRole" in actions
    }
    arn = _rendered({"Fn::GetAtt": [presigner, "Arn"]})
    assert assumers == {"api": {arn}, "worker": {arn}}
    # every function is told the role (the environment is shared); its ARN, not a name built by hand
    functions = by_handler(template)
    assert {
        spec.name: functions[spec.handler]["Environment"]["Variables"]["RUNPLANE_PRESIGN_ROLE_ARN"]
        for spec in defs.FUNCTIONS
    } == {f.name: {"Fn::GetAtt": [presigner, "Arn"]} for f in defs.FUNCTIONS}


def test_alarms_watch_every_dlq_queue_age_function_errors_throttles_api_5xx_sweep_errors_and_agents(
    template: dict[str, Any],
) -> None:
    alarms = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()]
    by_metric: dict[str, int] = {}
    for alarm in alarms:
        by_metric[alarm["MetricName"]] = by_metric.get(alarm["MetricName"], 0) + 1
    dlqs = [q for q in defs.QUEUES if q.max_receive_count is None]
    assert by_metric["ApproximateNumberOfMessagesVisible"] == len(dlqs)
    assert by_metric["ApproximateAgeOfOldestMessage"] == 2
    assert by_metric["Errors"] == len(defs.FUNCTIONS)
    assert by_metric["Throttles"] == len(defs.FUNCTIONS)
    assert by_metric["5xx"] == 1  # the HTTP API's (test_the_api_5xx_alarm_watches_the_deployed_api)
    [sweep] = [a for a in alarms if a["MetricName"] == "SweepErrors"]
    assert (sweep["Namespace"], sweep["Threshold"]) == ("Runplane", 0)
    [silent] = [a for a in alarms if a["MetricName"] == "AgentHeartbeatTimeouts"]
    # three silent agents within 15 minutes (one is that agent's own failure, shown on its run)
    assert (silent["Namespace"], silent["Statistic"], silent["Period"]) == ("Runplane", "Sum", 900)
    assert (silent["Threshold"], silent["ComparisonOperator"]) == (2, "GreaterThanThreshold")
    assert (silent["EvaluationPeriods"], silent["TreatMissingData"]) == (1, "notBreaching")
    assert silent["Dimensions"] == [{"Name": "service", "Value": "runplane"}]
    assert "AgentTimeouts" not in by_metric  # a run reaching its deadline is that run's timeout
    [dashboard] = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in ("RunsCreated", "CallbacksDead", "AgentHeartbeatTimeouts", "AgentTimeouts"):
        assert f'\\"{metric}\\"' in body, metric


@pytest.mark.parametrize("api", API_TYPES)
def test_the_api_5xx_alarm_watches_the_deployed_api(synthesize: Any, api: str) -> None:
    """An HTTP API's `5xx` by its id; a REST API's `5XXError` by its name."""
    template = synthesize(api)[1]
    [alarm] = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/ApiGateway"
    ]
    if api == "http":
        [gateway] = resources(template, "AWS::ApiGatewayV2::Api")
        expected = ("5xx", [{"Name": "ApiId", "Value": {"Ref": gateway}}])
    else:
        [gateway] = resources(template, "AWS::ApiGateway::RestApi").values()
        expected = ("5XXError", [{"Name": "ApiName", "Value": gateway["Properties"]["Name"]}])
    assert (alarm["MetricName"], alarm["Dimensions"]) == expected
    assert (alarm["Threshold"], alarm["Statistic"], alarm["Period"]) == (0, "Sum", 300)


def test_the_rest_api_stage_is_throttled_traced_and_access_logged(synthesize: Any) -> None:
    template = synthesize("rest")[1]
    [stage] = resources(template, "AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    assert properties["StageName"] == "dev"
    assert properties["TracingEnabled"] is True
    assert properties["AccessLogSetting"]["DestinationArn"]
    [method_settings] = properties["MethodSettings"]
    assert method_settings["ThrottlingRateLimit"] == 100
    assert method_settings["ThrottlingBurstLimit"] == 200
    [api] = resources(template, "AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["BinaryMediaTypes"] == ["multipart/form-data"]
    assert any(o.get("Description") == "Runplane API base URL" for o in template["Outputs"].values())
    assert resources(template, "AWS::ApiGatewayV2::Api") == {}


def test_the_http_api_proxies_everything_on_its_default_stage_throttled_and_access_logged(
    template: dict[str, Any], synthesize: Any
) -> None:
    """Payload format 2.0 on the $default route, the REST stage's throttling and access log fields (the path
    for the resource path, which an HTTP API has not), no stage in the URL, no stage tracing (the function's
    own X-Ray tracing stays), an integration timeout a sync wait fits in."""
    [(api_id, api)] = resources(template, "AWS::ApiGatewayV2::Api").items()
    assert api["Properties"]["ProtocolType"] == "HTTP"
    assert "BinaryMediaTypes" not in api["Properties"]
    [route] = resources(template, "AWS::ApiGatewayV2::Route").values()
    assert (route["Properties"]["RouteKey"], route["Properties"]["AuthorizationType"]) == ("$default", "NONE")
    [(integration_id, integration)] = resources(template, "AWS::ApiGatewayV2::Integration").items()
    assert route["Properties"]["Target"] == {"Fn::Join": ["", ["integrations/", {"Ref": integration_id}]]}
    assert {k: integration["Properties"][k] for k in ("IntegrationType", "PayloadFormatVersion")} == {
        "IntegrationType": "AWS_PROXY",
        "PayloadFormatVersion": "2.0",
    }
    assert integration["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [api_function(template), "Arn"]}
    assert integration["Properties"]["TimeoutInMillis"] == 29_000  # an HTTP API waits at most 30 s
    api_env = template["Resources"][api_function(template)]["Properties"]["Environment"]["Variables"]
    assert int(api_env["RUNPLANE_SYNC_WAIT_SECONDS"]) < 29 <= defs.function("api").timeout_seconds
    [stage] = resources(template, "AWS::ApiGatewayV2::Stage").values()
    properties = stage["Properties"]
    assert (properties["StageName"], properties["AutoDeploy"]) == ("$default", True)
    assert properties["DefaultRouteSettings"] == {"ThrottlingRateLimit": 100, "ThrottlingBurstLimit": 200}
    access_logs = logical_id(template, "/api/access-logs/Resource")
    assert properties["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": [access_logs, "Arn"]}
    [rest_stage] = resources(synthesize("rest")[1], "AWS::ApiGateway::Stage").values()
    rest_fields = json.loads(rest_stage["Properties"]["AccessLogSetting"]["Format"])
    http_fields = json.loads(properties["AccessLogSettings"]["Format"])
    assert http_fields == {k: v for k, v in rest_fields.items() if k != "resourcePath"} | {
        "path": "$context.path"
    }
    [output] = [o for o in template["Outputs"].values() if o.get("Description") == "Runplane API base URL"]
    assert output["Value"] == {"Fn::Join": ["", [*execute_api(api_id), "/"]]}
    assert resources(template, "AWS::ApiGateway::RestApi") == {}  # nor a REST stage, nor its account role


def api_function(template: dict[str, Any]) -> str:
    [api] = [
        k
        for k, f in resources(template, "AWS::Lambda::Function").items()
        if f["Properties"]["Handler"] == defs.function("api").handler
    ]
    return api


def execute_api(api_id: str) -> list[Any]:
    """The parts of `https://<api id>.execute-api.<region>.<url suffix>` in a synthesized Fn::Join."""
    return [
        "https://",
        {"Ref": api_id},
        ".execute-api.",
        {"Ref": "AWS::Region"},
        ".",
        {"Ref": "AWS::URLSuffix"},
    ]


def test_a_rest_stage_samples_its_traces_by_a_rule_of_its_own(tmp_path: Path) -> None:
    _, template = synth(tmp_path, api="rest", trace_fixed_rate="0.05")  # as `-c trace_fixed_rate=0.05`
    [stage] = resources(template, "AWS::ApiGateway::Stage").values()
    [api] = resources(template, "AWS::ApiGateway::RestApi").values()
    [rule] = resources(template, "AWS::XRay::SamplingRule").values()
    sampling = rule["Properties"]["SamplingRule"]
    assert (sampling["ReservoirSize"], sampling["FixedRate"]) == (1, 0.05)
    assert sampling["ServiceType"] == "AWS::ApiGateway::Stage"
    assert sampling["ServiceName"] == f"{api['Properties']['Name']}/{stage['Properties']['StageName']}"
    assert sampling["Priority"] < 10000  # before the account's Default rule


def test_configuration_comes_from_context(tmp_path: Path) -> None:
    producer = "arn:aws:iam::123456789012:role/producer"
    _, template = synth(
        tmp_path,
        stage="prod",
        intake_producer_principals=[producer],
        alarm_email="ops@example.com",
        sync_wait_seconds=20,
        account_max_concurrency=7,
        lambda_functions=[AGENTS],
        bedrock_models=["amazon.nova-*", "us.anthropic.claude-*"],
        model_prices={"house-model": {"input": 1, "output": 2}},
        trace_runs=False,
        public_url="https://runplane.example.com/",
        max_async_run_seconds=7 * 86400,
        agent_heartbeat_seconds="120",  # as `-c agent_heartbeat_seconds=120` gives it
        agent_heartbeat_alarm_count=1,
        run_retention_days=10,
        resource_retention_days="90",
    )
    tables = resources(template, "AWS::DynamoDB::Table").values()
    assert {t["DeletionPolicy"] for t in tables} == {"Retain"}
    queue_policies = json.dumps(list(resources(template, "AWS::SQS::QueuePolicy").values()))
    assert producer in queue_policies
    [subscription] = resources(template, "AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Endpoint"] == "ops@example.com"
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    assert all(a["Properties"]["AlarmActions"] for a in alarms)
    environments = [f["Environment"]["Variables"] for f in by_handler(template).values()]
    assert {e["RUNPLANE_SYNC_WAIT_SECONDS"] for e in environments} == {"20"}
    assert {e["RUNPLANE_ACCOUNT_MAX_CONCURRENCY"] for e in environments} == {"7"}
    assert {e["RUNPLANE_LAMBDA_FUNCTIONS"] for e in environments} == {AGENTS}
    assert {e["RUNPLANE_BEDROCK_MODELS"] for e in environments} == {"amazon.nova-*,us.anthropic.claude-*"}
    assert {e["RUNPLANE_MODEL_PRICES"] for e in environments} == {'{"house-model":{"input":1,"output":2}}'}
    assert {e["RUNPLANE_TRACE_RUNS"] for e in environments} == {"false"}
    assert {e["RUNPLANE_PUBLIC_URL"] for e in environments} == {"https://runplane.example.com"}
    assert {e["RUNPLANE_MAX_ASYNC_RUN_SECONDS"] for e in environments} == {"604800"}
    assert {e["RUNPLANE_AGENT_HEARTBEAT_SECONDS"] for e in environments} == {"120"}
    assert {e["RUNPLANE_RUN_RETENTION_DAYS"] for e in environments} == {"10"}
    assert {e["RUNPLANE_RESOURCE_RETENTION_DAYS"] for e in environments} == {"90"}
    assert lifecycle(template) == {"run": 10 + 7, "resource": 90 + 1, "incomplete multipart uploads": 1}
    [silent] = [a for a in alarms if a["Properties"]["MetricName"] == "AgentHeartbeatTimeouts"]
    assert silent["Properties"]["Threshold"] == 0  # every silent agent
    assert runtime_grants(template) == {
        "worker": {
            "lambda:InvokeFunction": {AGENTS},
            "bedrock:InvokeModel": {
                f"arn:{PARTITION}:bedrock:*::foundation-model/amazon.nova-*",
                f"arn:{PARTITION}:bedrock:*:{ACCOUNT}:inference-profile/amazon.nova-*",
                # a profile's model, in whichever region the profile routes to
                f"arn:{PARTITION}:bedrock:*::foundation-model/anthropic.claude-*",
                f"arn:{PARTITION}:bedrock:*:{ACCOUNT}:inference-profile/us.anthropic.claude-*",
            },
        }
    }


AGENTS = "arn:aws:lambda:eu-west-1:123456789012:function:agents-*"
PARTITION, ACCOUNT = '{"Ref":"AWS::Partition"}', '{"Ref":"AWS::AccountId"}'


def runtime_grants(template: dict[str, Any]) -> dict[str, dict[str, set[str]]]:
    """By function: the Lambda and Bedrock actions its role allows, and on what."""
    grants: dict[str, dict[str, set[str]]] = {}
    for policy in resources(template, "AWS::IAM::Policy").values():
        function = policy["Metadata"]["aws:cdk:path"].split("/functions/")[1].split("-role/")[0]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Action"] in ("lambda:InvokeFunction", "bedrock:InvokeModel"):
                found = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                rendered = [r if isinstance(r, str) else _joined(r) for r in found]
                grants.setdefault(function, {})[statement["Action"]] = set(rendered)
    return grants


def _joined(value: dict[str, Any]) -> str:
    parts = value["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else json.dumps(p, separators=(",", ":")) for p in parts)


def test_by_default_only_the_worker_may_invoke_models_and_no_lambda_function(
    template: dict[str, Any],
) -> None:
    assert runtime_grants(template) == {
        "worker": {
            "bedrock:InvokeModel": {
                f"arn:{PARTITION}:bedrock:*::foundation-model/*",
                f"arn:{PARTITION}:bedrock:*:{ACCOUNT}:inference-profile/*",
            }
        }
    }


def test_outputs_name_every_table_and_queue_for_the_cli(template: dict[str, Any]) -> None:
    described = {o.get("Description") for o in template["Outputs"].values()}
    assert {t.env_var for t in defs.TABLES} | {q.env_var for q in defs.QUEUES} <= described


# --- the API's own URL in the functions' environment, without a circular dependency ---


def dependencies(template: dict[str, Any]) -> dict[str, set[str]]:
    """Resource -> the resources it needs first: its DependsOn, and whatever its Ref, Fn::GetAtt and
    Fn::Sub name (what CloudFormation orders creation by)."""
    names = set(template["Resources"])

    def named(node: Any) -> set[str]:
        if isinstance(node, list):
            return set().union(*map(named, node)) if node else set()
        if not isinstance(node, dict):
            return set()
        found: set[str] = set()
        for key, value in node.items():
            if key == "Ref" and value in names:
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!][^}]*)\}", text)} & names
                found |= named(value)
            else:
                found |= named(value)
        return found

    graph = {}
    for name, resource in template["Resources"].items():
        after = resource.get("DependsOn", [])
        graph[name] = named(resource.get("Properties", {})) | set(
            [after] if isinstance(after, str) else after
        )
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circular chain of dependencies (a resource needing itself through others), or []."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        path.append(node)
        for needed in sorted(graph.get(node, ())):
            if found := visit(needed):
                return found
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if found := visit(node):
            return found
    return []


def needs(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every resource `start` needs, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for needed in graph.get(todo.pop(), ()):
            if needed not in seen:
                seen.add(needed)
                todo.append(needed)
    return seen


@pytest.mark.parametrize(
    ("api", "api_type", "stage_type", "stage_path"),
    [
        ("http", "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", ""),  # $default: no stage in the URL
        ("rest", "AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage", "/dev"),
    ],
)
def test_every_function_is_told_the_apis_url_built_from_the_api_id(
    synthesize: Any, api: str, api_type: str, stage_type: str, stage_path: str
) -> None:
    template = synthesize(api)[1]
    [gateway] = resources(template, api_type)
    url = {"Fn::Join": ["", [*execute_api(gateway), *([stage_path] if stage_path else [])]]}
    functions = by_handler(template)
    assert {
        spec.name: functions[spec.handler]["Environment"]["Variables"]["RUNPLANE_PUBLIC_URL"]
        for spec in defs.FUNCTIONS
    } == dict.fromkeys((f.name for f in defs.FUNCTIONS), url)
    # the api function is told which events it receives
    assert {
        spec.name: functions[spec.handler]["Environment"]["Variables"].get("RUNPLANE_API_TYPE")
        for spec in defs.FUNCTIONS
    } == {f.name: api if f.name == "api" else None for f in defs.FUNCTIONS}
    for spec in defs.FUNCTIONS:
        env = functions[spec.handler]["Environment"]["Variables"]
        assert (env["RUNPLANE_MAX_ASYNC_RUN_SECONDS"], env["RUNPLANE_AGENT_HEARTBEAT_SECONDS"]) == (
            "86400",
            "300",
        )
        assert env["RUNPLANE_RESOURCE_RETENTION_DAYS"] == "30"
    # the API needs no function: the functions may need it
    graph = dependencies(template)
    lambdas = set(resources(template, "AWS::Lambda::Function"))
    assert needs(graph, gateway) & lambdas == set()
    [stage] = resources(template, stage_type)
    assert {f for f in lambdas if stage in needs(graph, f)} == set()


@pytest.mark.parametrize("api", API_TYPES)
def test_the_template_has_no_circular_dependency(synthesize: Any, api: str) -> None:
    assert cycle(dependencies(synthesize(api)[1])) == []


def test_the_rest_stage_in_the_functions_environment_would_be_a_circular_dependency(synthesize: Any) -> None:
    """Why the REST API's URL is built from its id: what the check would see had the api function been
    given `rest_api.url` (it names the stage)."""
    template = synthesize("rest")[1]
    api = api_function(template)
    [stage] = resources(template, "AWS::ApiGateway::Stage")
    broken = json.loads(json.dumps(template))
    broken["Resources"][api]["Properties"]["Environment"]["Variables"]["RUNPLANE_PUBLIC_URL"] = {"Ref": stage}
    found = cycle(dependencies(broken))
    assert found[0] == found[-1]
    assert {api, stage} <= set(found)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_async_run_seconds", 7 * 86400 + 1),
        ("max_async_run_seconds", 0),
        ("max_async_run_seconds", "a day"),
        ("agent_heartbeat_seconds", 86401),
        ("agent_heartbeat_seconds", True),
        ("agent_heartbeat_alarm_count", 0),
        ("resource_retention_days", 0),
        ("resource_retention_days", 3651),
        ("resource_retention_days", "a month"),
        ("public_url", "http://runplane.example.com"),
        ("public_url", "runplane.example.com"),
        ("public_url", "https://runplane.example.com/?stage=prod"),
        ("trace_fixed_rate", 1.5),
        ("trace_fixed_rate", "a few"),
        ("trace_fixed_rate", True),
        ("api", "websocket"),
        ("api", ""),
        ("sync_wait_seconds", 29),  # API Gateway gives up on the function after 29 s
        ("sync_wait_seconds", "30"),
    ],
)
def test_context_the_functions_would_refuse_fails_the_synth(name: str, value: Any) -> None:
    from infra.config import Config

    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


def test_async_agent_context_is_read_as_the_functions_read_it() -> None:
    from infra.config import Config

    assert Config(max_async_run_seconds="3600").max_async_run_seconds == 3600
    assert Config(resource_retention_days="3650").resource_retention_days == 3650
    assert Config(public_url="https://runplane.example.com/prod/").custom_public_url == (
        "https://runplane.example.com/prod"
    )
    assert Config().custom_public_url is None
    assert (Config().api, Config(api="rest").api) == ("http", "rest")
    assert Config(sync_wait_seconds="28").sync_wait_seconds == 28
