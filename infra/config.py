"""Deployment settings from CDK context (cdk.json, or `-c key=value`), with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_cdk import RemovalPolicy
from constructs import Node

DEFAULTS: dict[str, Any] = {
    "stage": "dev",
    "sync_wait_seconds": 25,
    "callback_schedule": "5,300,1800,7200,18000,36000,50400,72000,86400",
    "run_retention_days": 30,
    "intake_producer_principals": [],
    "log_retention_days": 30,
    "alarm_email": "",
    "alarm_topic_arn": "",
    "api_throttle_rate": 100,
    "api_throttle_burst": 200,
    "runnable_packages": "",
    "account_max_concurrency": 20,
    "lambda_functions": [],
    "bedrock_models": ["*"],
    "model_prices": {},
    "trace_runs": True,
}


@dataclass(frozen=True)
class Config:
    stage: str = DEFAULTS["stage"]
    sync_wait_seconds: int = DEFAULTS["sync_wait_seconds"]
    callback_schedule: str = DEFAULTS["callback_schedule"]
    run_retention_days: int = DEFAULTS["run_retention_days"]
    intake_producer_principals: list[str] = field(default_factory=list)
    log_retention_days: int = DEFAULTS["log_retention_days"]
    alarm_email: str = ""
    alarm_topic_arn: str = ""
    api_throttle_rate: int = DEFAULTS["api_throttle_rate"]
    api_throttle_burst: int = DEFAULTS["api_throttle_burst"]
    runnable_packages: str = ""
    account_max_concurrency: int = DEFAULTS["account_max_concurrency"]
    # What lambda and bedrock runnables may invoke: ARN / model id patterns (`*` wildcards), granted in IAM
    lambda_functions: list[str] = field(default_factory=list)
    bedrock_models: list[str] = field(default_factory=lambda: ["*"])
    model_prices: dict[str, dict[str, float]] = field(default_factory=dict)  # USD per 1M tokens by model
    trace_runs: bool = DEFAULTS["trace_runs"]

    @classmethod
    def from_context(cls, node: Node) -> Config:
        values = {name: node.try_get_context(name) for name in DEFAULTS}
        return cls(**{name: DEFAULTS[name] if value is None else value for name, value in values.items()})

    @property
    def removal_policy(self) -> RemovalPolicy:
        """Data outlives a stack outside dev: tables, queues and the bucket are retained on delete."""
        return RemovalPolicy.DESTROY if self.stage == "dev" else RemovalPolicy.RETAIN
