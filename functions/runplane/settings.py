"""Runtime settings: environment variables parsed once into one validated object."""

from __future__ import annotations

import os
from functools import cache
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from runplane import definitions as defs


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseModel):
    """Each field `name` is read from the environment variable `RUNPLANE_<NAME>` (see README)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    runs_table: str = "runplane-runs"
    runnables_table: str = "runplane-runnables"
    keys_table: str = "runplane-api-keys"
    intake_queue_url: str = ""
    dispatch_queue_url: str = ""
    intake_dlq_url: str = ""
    dispatch_dlq_url: str = ""
    payload_bucket: str = "runplane-payloads"

    runnable_packages: Annotated[list[str], BeforeValidator(_comma_list)] = Field(default_factory=list)
    sync_wait_seconds: float = Field(25.0, gt=0, le=900)
    max_attempts: int = Field(3, ge=1, le=20)
    lease_seconds: float = Field(30.0, ge=1)
    max_run_seconds: int = Field(840, ge=1, le=defs.WORKER_TIMEOUT_SECONDS)
    redispatch_seconds: float = Field(300.0, ge=1)
    run_retention_days: int = Field(30, ge=1)
    max_request_bytes: int = Field(1_048_576, ge=1024)
    inline_limit_bytes: int = Field(100_000, ge=1024, le=300_000)
    key_cache_seconds: float = Field(60.0, ge=0)

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
