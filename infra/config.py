"""Deployment settings from CDK context (cdk.json, or `-c key=value`), with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aws_cdk import RemovalPolicy
from constructs import Node
from runplane.settings import check_cors_origins

DEFAULTS: dict[str, Any] = {
    "stage": "dev",
    "api": "http",
    "sync_wait_seconds": 25,
    "callback_schedule": "5,300,1800,7200,18000,36000,50400,72000,86400",
    "run_retention_days": 30,
    "resource_retention_days": 30,
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
    "trace_fixed_rate": 0.01,
    "public_url": "",
    "max_async_run_seconds": 86400,
    "agent_heartbeat_seconds": 300,
    "agent_heartbeat_alarm_count": 3,
    "cors_origins": [],
}

# What the functions' settings accept (runplane.settings.Settings): checked at synth, not at the first run.
MAX_ASYNC_RUN_SECONDS = 7 * 86400
MAX_AGENT_HEARTBEAT_SECONDS = 86400
MAX_RESOURCE_RETENTION_DAYS = 3650
# The API Gateway in front of the api function: an HTTP API, or the REST API for what only it offers
API_TYPES = ("http", "rest")
# How long API Gateway waits for the api function (REST's default; an HTTP API's at most 30 s): a sync
# wait must end before it
API_TIMEOUT_SECONDS = 29


@dataclass(frozen=True)
class Config:
    stage: str = DEFAULTS["stage"]
    api: str = DEFAULTS["api"]
    sync_wait_seconds: int = DEFAULTS["sync_wait_seconds"]
    callback_schedule: str = DEFAULTS["callback_schedule"]
    run_retention_days: int = DEFAULTS["run_retention_days"]
    # How long a resource is kept unless pinned: its item's TTL, and (a day later) its bytes' lifecycle rule
    resource_retention_days: int = DEFAULTS["resource_retention_days"]
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
    # X-Ray: behind a REST API, the share of its requests traced after the first each second (infra/tracing.py)
    trace_fixed_rate: float = DEFAULTS["trace_fixed_rate"]
    # The API's base URL as agents reach it (a custom domain); empty: the API Gateway stage's own URL
    public_url: str = ""
    max_async_run_seconds: int = DEFAULTS["max_async_run_seconds"]
    agent_heartbeat_seconds: int = DEFAULTS["agent_heartbeat_seconds"]
    # The alarm on silent agents fires when at least this many are given up within 15 minutes
    agent_heartbeat_alarm_count: int = DEFAULTS["agent_heartbeat_alarm_count"]
    # Origins whose browser pages may call the API (CORS): exact origins, or `*` alone; a list, or as
    # `-c cors_origins=https://a.example,https://b.example` gives it, comma-separated
    cors_origins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.api not in API_TYPES:
            raise ValueError(f"api must be one of {', '.join(API_TYPES)}, not {self.api!r}")
        for name, high in (
            ("sync_wait_seconds", API_TIMEOUT_SECONDS - 1),
            ("max_async_run_seconds", MAX_ASYNC_RUN_SECONDS),
            ("agent_heartbeat_seconds", MAX_AGENT_HEARTBEAT_SECONDS),
            ("agent_heartbeat_alarm_count", 10_000),
            ("resource_retention_days", MAX_RESOURCE_RETENTION_DAYS),
        ):
            # `-c name=value` gives a string: the number it spells
            object.__setattr__(self, name, _whole(name, getattr(self, name), 1, high))
        object.__setattr__(self, "trace_fixed_rate", _fraction("trace_fixed_rate", self.trace_fixed_rate))
        object.__setattr__(self, "cors_origins", _origins(self.cors_origins))
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(
                    f"public_url must be an https URL without query or fragment (the API's base URL, "
                    f"e.g. https://runplane.example.com), not {self.public_url!r}"
                )

    @classmethod
    def from_context(cls, node: Node) -> Config:
        values = {name: node.try_get_context(name) for name in DEFAULTS}
        return cls(**{name: DEFAULTS[name] if value is None else value for name, value in values.items()})

    @property
    def custom_public_url(self) -> str | None:
        """The deployer's base URL without its trailing slash; None: the stage's own URL is used."""
        return self.public_url.rstrip("/") or None

    @property
    def removal_policy(self) -> RemovalPolicy:
        """Data outlives a stack outside dev: tables, queues and the bucket are retained on delete."""
        return RemovalPolicy.DESTROY if self.stage == "dev" else RemovalPolicy.RETAIN


def _whole(name: str, value: object, low: int, high: int) -> int:
    number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return number


def _fraction(name: str, value: Any) -> float:
    try:
        number = float(value)  # `-c name=0.05` gives a string
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 <= number <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, not {value!r}")
    return number


def _origins(value: Any) -> list[str]:
    """`cors_origins` checked as the api function checks it: a list, or comma-separated as `-c` gives it."""
    origins = [o.strip() for o in value.split(",") if o.strip()] if isinstance(value, str) else value
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ValueError(f"cors_origins must be a list of origins, not {value!r}")
    try:
        return check_cors_origins(origins)
    except ValueError as error:
        raise ValueError(f"cors_origins: {error}") from None
