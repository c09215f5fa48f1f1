"""The Lambda functions of `runplane.definitions`: arm64, JSON logs with retention, X-Ray, a role each
with exactly the access its code needs, SQS event sources that report partial batch failures; and the
role presigned resource URLs are signed with."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from runplane import definitions as defs
from runplane.domain.pricing import INFERENCE_PROFILE
from runplane.observability import LOG_LEVEL

from infra.config import Config

RUNTIME = lambda_.Runtime(f"python{defs.LAMBDA_PYTHON}", lambda_.RuntimeFamily.PYTHON)
READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
# Objects are put with their expiry tag (`defs.EXPIRY_TAG`): a PutObject with tags needs both actions.
PUT_OBJECT = ("s3:PutObject", "s3:PutObjectTagging")
# A resource's bytes: `{account_id}/resources/{resource_id}` (runplane.adapters.presigner.resource_prefix).
RESOURCE_OBJECTS = "*/resources/*"
# The presign role (runplane.settings.Settings.presign_role_arn) and what its sessions may sign: reading a
# resource's bytes (GET) and uploading them with their expiry tag (POST policy). Each session is assumed
# with a policy narrowing it to one account's `{account_id}/resources/*`.
PRESIGN_ROLE_ENV = "RUNPLANE_PRESIGN_ROLE_ARN"
PRESIGN_ACTIONS = ("s3:GetObject", *PUT_OBJECT)
# A role assumed with another role's credentials (a function's) is "role chaining": AWS caps that session
# at 1 h whatever this allows, so a presigned URL lives at most an hour.
PRESIGN_MAX_SESSION_HOURS = 12


@dataclass(frozen=True)
class Access:
    """What one function's code touches: tables ("r" or "rw"), queues it sends to, the payload bucket."""

    tables: dict[str, str]
    sends_to: tuple[str, ...] = ()
    bucket: str = ""  # "r" or "rw" ("rw" puts objects with their expiry tag)
    deletes_resources: bool = False  # deletes resources' bytes (and no other object)
    # reads objects that may be missing (a pending upload, a deleted resource): without s3:ListBucket S3
    # answers such a GetObject 403 AccessDenied, not 404 NoSuchKey
    finds_missing: bool = False
    presigns: bool = False  # assumes the presign role to sign resources' URLs
    executes_runs: bool = False  # invokes the deployment's allowed Lambda functions and Bedrock models


# Read off the code paths each handler runs (logic/*): anything not listed is denied.
ACCESS = {
    "api": Access(
        tables={
            "runs": "rw",
            "runnables": "rw",
            "api_keys": "rw",
            "callbacks": "rw",
            "accounts": "rw",
            "concurrency": "rw",
            "run_events": "rw",  # an async agent's reports add events (logic/agent_reports.py)
            "resources": "rw",  # /v1/resources, and runs naming or carrying resources (logic/resources.py)
        },
        sends_to=(defs.DISPATCH.name, defs.CALLBACKS_QUEUE.name),
        bucket="rw",
        deletes_resources=True,  # DELETE /v1/resources/{id}, and an upload that breaks its limits
        finds_missing=True,
        presigns=True,  # upload forms and download URLs
    ),
    "intake": Access(
        # a run request may name resources or carry them (logic/run_resources.py)
        tables={"runs": "rw", "runnables": "r", "accounts": "rw", "resources": "rw"},
        sends_to=(defs.DISPATCH.name, defs.INTAKE_DLQ.name),
        bucket="rw",
        # a named resource's pending upload is checked when a run uses it, and deleted if it breaks its
        # limits (resources.found_resources -> finish_upload), as the api does
        deletes_resources=True,
        finds_missing=True,
    ),
    "worker": Access(
        tables={
            "runs": "rw",
            "runnables": "r",
            "callbacks": "rw",
            "accounts": "rw",
            "concurrency": "rw",
            "run_events": "rw",
        },
        sends_to=(defs.DISPATCH.name, defs.CALLBACKS_QUEUE.name),
        bucket="rw",  # reads the run's resources' bytes with the payloads
        finds_missing=True,  # a resource deleted after its run was accepted
        presigns=True,  # download URLs of a run's resources
        executes_runs=True,
    ),
    "dead_letters": Access(
        tables={"runs": "rw", "runnables": "r", "callbacks": "rw", "accounts": "rw", "concurrency": "rw"},
        sends_to=(defs.DISPATCH.name, defs.CALLBACKS_QUEUE.name),
        bucket="rw",
        finds_missing=True,  # a run taken over looks for an outcome its worker kept (usually none)
    ),
    "sweeper": Access(
        tables={"runs": "rw", "runnables": "r", "callbacks": "rw", "accounts": "rw", "concurrency": "rw"},
        sends_to=(defs.DISPATCH.name, defs.CALLBACKS_QUEUE.name),
        bucket="rw",
        finds_missing=True,  # as dead_letters: ending.take_over
    ),
    "callbacks": Access(
        tables={"runs": "r", "callbacks": "rw", "accounts": "rw"},
        sends_to=(defs.CALLBACKS_DLQ.name,),
        bucket="r",
    ),
}


class Functions(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        code: lambda_.Code,
        tables: dict[str, dynamodb.Table],
        queues: dict[str, sqs.Queue],
        bucket: s3.Bucket,
    ) -> None:
        super().__init__(scope, id)
        roles = {spec.name: self._role(spec) for spec in defs.FUNCTIONS}
        # Trusts the function roles by ARN and is named in every function's environment: the functions
        # need it first, and it needs only their roles (not the functions), so there is no cycle.
        self.presigner = self._presigner(
            bucket, [roles[n] for n, access in ACCESS.items() if access.presigns]
        )
        environment = {
            **{t.env_var: tables[t.name].table_name for t in defs.TABLES},
            **{q.env_var: queues[q.name].queue_url for q in defs.QUEUES},
            defs.PAYLOAD_BUCKET_ENV: bucket.bucket_name,
            "RUNPLANE_SYNC_WAIT_SECONDS": str(config.sync_wait_seconds),
            "RUNPLANE_CALLBACK_SCHEDULE": config.callback_schedule,
            "RUNPLANE_RUN_RETENTION_DAYS": str(config.run_retention_days),
            "RUNPLANE_RESOURCE_RETENTION_DAYS": str(config.resource_retention_days),
            PRESIGN_ROLE_ENV: self.presigner.role_arn,
            "RUNPLANE_RUNNABLE_PACKAGES": config.runnable_packages,
            "RUNPLANE_ACCOUNT_MAX_CONCURRENCY": str(config.account_max_concurrency),
            "RUNPLANE_LAMBDA_FUNCTIONS": ",".join(config.lambda_functions),
            "RUNPLANE_BEDROCK_MODELS": ",".join(config.bedrock_models),
            "RUNPLANE_MODEL_PRICES": json.dumps(config.model_prices, separators=(",", ":")),
            "RUNPLANE_TRACE_RUNS": str(config.trace_runs).lower(),
            "RUNPLANE_MAX_ASYNC_RUN_SECONDS": str(config.max_async_run_seconds),
            "RUNPLANE_AGENT_HEARTBEAT_SECONDS": str(config.agent_heartbeat_seconds),
            "POWERTOOLS_SERVICE_NAME": "runplane",
            "POWERTOOLS_METRICS_NAMESPACE": "Runplane",
        }
        self.by_name: dict[str, lambda_.Function] = {}
        for spec in defs.FUNCTIONS:
            function = self._function(spec, config, code, environment, roles[spec.name])
            self._grant(function, ACCESS[spec.name], tables, queues, bucket)
            if ACCESS[spec.name].presigns:
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[self.presigner.role_arn])
                )
            if ACCESS[spec.name].executes_runs:
                self._grant_runtimes(function, config)
            if spec.queue:
                function.add_event_source(
                    sources.SqsEventSource(
                        queues[spec.queue],
                        batch_size=spec.batch_size,
                        report_batch_item_failures=True,
                        max_concurrency=spec.max_concurrency or 50,
                    )
                )
            if spec.schedule_minutes:
                events.Rule(
                    self,
                    f"{spec.name}-schedule",
                    schedule=events.Schedule.rate(Duration.minutes(spec.schedule_minutes)),
                    targets=[targets.LambdaFunction(function)],
                )
            self.by_name[spec.name] = function

    def add_environment(self, name: str, value: str) -> None:
        """Give every function one more variable: one known only once other resources exist (the API's
        URL), so that it cannot be in the environment the functions are created with."""
        for function in self.by_name.values():
            function.add_environment(name, value)

    def _role(self, spec: defs.Function) -> iam.Role:
        return iam.Role(
            self,
            f"{spec.name}-role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runplane {spec.name} function",
        )

    def _presigner(self, bucket: s3.Bucket, assumed_by: list[iam.Role]) -> iam.Role:
        """The role resources' presigned URLs are signed with: only `assumed_by` may assume it."""
        role = iam.Role(
            self,
            "presigner",
            assumed_by=iam.CompositePrincipal(*(iam.ArnPrincipal(r.role_arn) for r in assumed_by)),
            description="Runplane presigned resource URLs (sessions narrowed to one account's resources)",
            max_session_duration=Duration.hours(PRESIGN_MAX_SESSION_HOURS),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=list(PRESIGN_ACTIONS), resources=[bucket.arn_for_objects(RESOURCE_OBJECTS)]
            )
        )
        return role

    def _function(
        self,
        spec: defs.Function,
        config: Config,
        code: lambda_.Code,
        environment: dict[str, str],
        role: iam.Role,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            f"{spec.name}-logs",
            retention=_retention(config.log_retention_days),
            removal_policy=config.removal_policy,
        )
        log_group.grant_write(role)
        return lambda_.Function(
            self,
            spec.name,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            code=code,
            handler=spec.handler,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_seconds),
            environment=environment,
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            # Lambda's platform lines (START, REPORT) only when they warn; the application's from LOG_LEVEL
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            application_log_level_v2=lambda_.ApplicationLogLevel[LOG_LEVEL],
            tracing=lambda_.Tracing.ACTIVE,
        )

    @staticmethod
    def _grant(
        function: lambda_.Function,
        access: Access,
        tables: dict[str, dynamodb.Table],
        queues: dict[str, sqs.Queue],
        bucket: s3.Bucket,
    ) -> None:
        for name, mode in access.tables.items():
            table = tables[name]
            actions = READ + (WRITE if mode == "rw" else ())
            indexes = [f"{table.table_arn}/index/{index.name}" for index in _definition(name).indexes]
            function.add_to_role_policy(
                iam.PolicyStatement(actions=list(actions), resources=[table.table_arn, *indexes])
            )
        for name in access.sends_to:
            function.add_to_role_policy(
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queues[name].queue_arn])
            )
        if access.bucket:
            actions = ["s3:GetObject", *(PUT_OBJECT if access.bucket == "rw" else ())]
            function.add_to_role_policy(
                iam.PolicyStatement(actions=actions, resources=[bucket.arn_for_objects("*")])
            )
        if access.finds_missing:
            function.add_to_role_policy(
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
            )
        if access.deletes_resources:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:DeleteObject"], resources=[bucket.arn_for_objects(RESOURCE_OBJECTS)]
                )
            )

    @staticmethod
    def _grant_runtimes(function: lambda_.Function, config: Config) -> None:
        """Invoke exactly the Lambda functions and Bedrock models runnables may name on this deployment."""
        if config.lambda_functions:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"], resources=list(config.lambda_functions)
                )
            )
        if config.bedrock_models:
            stack = Stack.of(function)
            resources: list[str] = []
            for pattern in config.bedrock_models:
                # an inference profile (us.…) routes to its model's foundation model in several regions
                model = INFERENCE_PROFILE.sub("", pattern, count=1)
                resources += [
                    f"arn:{stack.partition}:bedrock:*::foundation-model/{model}",
                    f"arn:{stack.partition}:bedrock:*:{stack.account}:inference-profile/{pattern}",
                ]
            function.add_to_role_policy(
                iam.PolicyStatement(actions=["bedrock:InvokeModel"], resources=list(dict.fromkeys(resources)))
            )


def _definition(table: str) -> defs.Table:
    return next(t for t in defs.TABLES if t.name == table)


def _retention(days: int) -> logs.RetentionDays:
    by_days = {
        1: logs.RetentionDays.ONE_DAY,
        7: logs.RetentionDays.ONE_WEEK,
        14: logs.RetentionDays.TWO_WEEKS,
        30: logs.RetentionDays.ONE_MONTH,
        90: logs.RetentionDays.THREE_MONTHS,
        180: logs.RetentionDays.SIX_MONTHS,
        365: logs.RetentionDays.ONE_YEAR,
    }
    if days not in by_days:
        raise ValueError(f"log_retention_days must be one of {sorted(by_days)}")
    return by_days[days]
