"""Runtime settings: environment variables parsed once into one validated object."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from runplane import definitions as defs
from runplane.domain.pricing import DEFAULT_PRICES, ModelPrice


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def check_cors_origins(origins: list[str]) -> list[str]:
    """`origins` if it is `*` alone or exact origins as browsers send them (`https://app.example.com`,
    lower case, a port only when not the scheme's default, no path); else ValueError naming the first
    that is not. Also checked at synth (infra/config.py)."""
    if "*" in origins:
        if origins != ["*"]:
            raise ValueError("`*` (any origin) must be the only entry")
        return origins
    for origin in origins:
        parts = urlsplit(origin)
        try:
            port = parts.port
        except ValueError:  # not a number
            port = 0
        exact = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and origin == f"{parts.scheme}://{parts.netloc}".lower()
            and "@" not in parts.netloc
            and port != 0
            and (parts.scheme, port) not in (("http", 80), ("https", 443))
        )
        if not exact:
            raise ValueError(
                f"{origin!r} is not an origin like https://app.example.com (no path, lower case)"
            )
    return origins


# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h
DEFAULT_CALLBACK_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_CALLBACK_DELAY_SECONDS = 86400


class Settings(BaseModel):
    """Each field `name` is read from the environment variable `RUNPLANE_<NAME>` (see README)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    runs_table: str = "runplane-runs"
    runnables_table: str = "runplane-runnables"
    keys_table: str = "runplane-api-keys"
    callbacks_table: str = "runplane-callbacks"
    accounts_table: str = "runplane-accounts"
    concurrency_table: str = "runplane-concurrency"
    events_table: str = "runplane-run-events"
    resources_table: str = "runplane-resources"
    intake_queue_url: str = ""
    dispatch_queue_url: str = ""
    intake_dlq_url: str = ""
    dispatch_dlq_url: str = ""
    callbacks_queue_url: str = ""
    callbacks_dlq_url: str = ""
    payload_bucket: str = "runplane-payloads"
    # The role presigned resource URLs are signed with, assumed with a session policy that admits only
    # the account's own resources (empty: the function's own credentials sign them).
    presign_role_arn: str = ""
    # The API Gateway in front of the api function, and so its event format: an HTTP API's payload 2.0
    # or a REST API's proxy event (infra context `api`; the local gateway sends the same).
    api_type: Literal["http", "rest"] = "http"
    # Origins whose browser pages may call the API (CORS, api.cors): exact origins, or `*` alone for any;
    # none by default. Credentials (cookies) are never allowed: callers send their key themselves.
    cors_origins: Annotated[list[str], BeforeValidator(_comma_list)] = Field(default_factory=list)

    runnable_packages: Annotated[list[str], BeforeValidator(_comma_list)] = Field(default_factory=list)
    # What lambda and bedrock runnables may call (shell-style patterns; the IAM policy grants the same).
    lambda_functions: Annotated[list[str], BeforeValidator(_comma_list)] = Field(default_factory=list)
    bedrock_models: Annotated[list[str], BeforeValidator(_comma_list)] = Field(default_factory=lambda: ["*"])
    # USD per 1M tokens by model, added to (or replacing entries of) the built-in table: JSON
    # {"model": {"input": 2.5, "output": 10, "cached": 1.25}}
    model_prices: Annotated[dict[str, ModelPrice], BeforeValidator(_json)] = Field(default_factory=dict)
    # Whether runs whose telemetry_strategy resolves to `default` are traced (X-Ray subsegment).
    trace_runs: bool = True
    # How long a cancelled python runnable may take to return after `ctx.cancelled` turns true.
    cancel_grace_seconds: float = Field(5.0, ge=0, le=60)
    sync_wait_seconds: float = Field(25.0, gt=0, le=900)
    max_attempts: int = Field(3, ge=1, le=20)
    lease_seconds: float = Field(30.0, ge=1)
    max_run_seconds: int = Field(840, ge=1, le=defs.WORKER_TIMEOUT_SECONDS)
    # Asynchronous agents (http and lambda runnables with `mode: async`): how long their runs may last,
    # how long an agent may stay silent (the runnable's `heartbeat_seconds` by default), how long a
    # cancelled agent has to end, how often one run may report, and the API's own address (the report URL
    # agents are given; without it, runnables cannot be async).
    max_async_run_seconds: int = Field(86400, ge=1, le=7 * 86400)
    agent_heartbeat_seconds: int = Field(300, ge=1, le=86400)
    agent_cancel_grace_seconds: float = Field(30.0, ge=0, le=900)  # an SQS delay's maximum
    report_rate_per_second: float = Field(5.0, gt=0)
    report_burst: int = Field(50, ge=0)
    public_url: str = ""
    redispatch_seconds: float = Field(300.0, ge=1)
    run_retention_days: int = Field(30, ge=1)
    # Resources: how long one is kept unless pinned, the largest one (an upload; content and fetched
    # URIs are bounded by the request and the fetch limit), how long an upload URL and a download URL
    # stay valid, and how much and how long a `uri` may take to fetch.
    resource_retention_days: int = Field(30, ge=1, le=3650)
    max_resource_bytes: int = Field(5 * 1024**3, ge=1024, le=5 * 1024**3)  # one S3 POST's maximum
    # (URLs are signed by a one-hour role session: adapters/presigner.py)
    resource_upload_seconds: int = Field(900, ge=60, le=3000)
    resource_url_seconds: int = Field(900, ge=60, le=3000)
    resource_fetch_bytes: int = Field(25 * 1024**2, ge=1024, le=200 * 1024**2)
    resource_fetch_seconds: float = Field(20.0, gt=0, le=25)
    max_request_bytes: int = Field(1_048_576, ge=1024)
    inline_limit_bytes: int = Field(100_000, ge=1024, le=300_000)
    key_cache_seconds: float = Field(60.0, ge=0)
    # Per API key: sustained requests per second, and how many may come at once (0 turns the limit off).
    rate_limit_per_second: float = Field(20.0, gt=0)
    rate_limit_burst: int = Field(40, ge=0)
    # Runs of one account executing at once unless the account has its own limit (0: no limit).
    account_max_concurrency: int = Field(20, ge=0)
    # How often the sweeper makes sure runs waiting for a concurrency slot were woken (a lost wake-up).
    concurrency_recheck_seconds: float = Field(90.0, gt=0)
    # A run's log is kept up to this many bytes (then a marker says how much more was cut).
    max_log_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)

    # Callbacks: delays between attempts (10 attempts over about three days), per-attempt timeouts,
    # how long a rotated-out signing secret still signs, and the loopback switch for local receivers.
    callback_schedule: Annotated[list[float], BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: list(DEFAULT_CALLBACK_SCHEDULE), max_length=50
    )
    callback_connect_timeout_seconds: float = Field(5.0, gt=0, le=30)
    callback_timeout_seconds: float = Field(15.0, gt=0, le=45)
    callback_secret_overlap_seconds: float = Field(24 * 3600, ge=0)
    # A run's callbacks for events other than its end: at most one per event type this often.
    callback_event_seconds: float = Field(5.0, ge=1, le=3600)
    allow_loopback: bool = False

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        return check_cors_origins(origins)

    @field_validator("callback_schedule")
    @classmethod
    def _positive_delays(cls, delays: list[float]) -> list[float]:
        if any(d <= 0 or d > MAX_CALLBACK_DELAY_SECONDS for d in delays):
            raise ValueError(f"each delay must be > 0 and at most {MAX_CALLBACK_DELAY_SECONDS} seconds")
        return delays

    @property
    def prices(self) -> dict[str, ModelPrice]:
        return {**DEFAULT_PRICES, **self.model_prices}

    @property
    def heartbeat_seconds(self) -> float:
        """A worker renews its lease this often: three renewals fit in one lease."""
        return self.lease_seconds / 3

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {
            name: env[f"RUNPLANE_{name.upper()}"]
            for name in cls.model_fields
            if f"RUNPLANE_{name.upper()}" in env
        }
        return cls.model_validate(values)


@cache
def get_settings() -> Settings:
    return Settings.from_env()
