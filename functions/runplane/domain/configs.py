"""What a runnable's `config` holds for each kind, and the runnable a request registers: one model per
kind, told apart by `kind` (the OpenAPI document shows them as a discriminated union)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from runplane.domain.models import OutboundHeaders, OutboundUrl, RunnableFields, Strict, json_number

FUNCTION_ARN = (
    r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9$_-]{1,128})?$"
)


class PythonConfig(Strict):
    function: str = Field(min_length=1, max_length=200, description="Name of a registered python runnable")


class AgentMode(Strict):
    """How a remote runnable runs: `sync` holds a worker until it answers (at most the deployment's
    maximum run length, 840 s by default); `async` hands the run to the agent, which reports to the run's
    report URL until it reports the end (docs/runnables.md)."""

    mode: Literal["sync", "async"] = Field("sync", description="async: the agent reports back, for hours")
    heartbeat_seconds: json_number(int, ge=1, le=86400) | None = Field(
        None,
        description="async: the longest an agent may go without reporting before its run is given up "
        "(default: the deployment's, 300 s)",
    )

    @model_validator(mode="after")
    def _async_only(self) -> AgentMode:
        if self.mode == "sync":
            for name in ("heartbeat_seconds", "cancel_url"):
                if getattr(self, name, None) is not None:
                    raise ValueError(f"{name} is for mode async")
        return self


class HttpConfig(AgentMode):
    url: OutboundUrl = Field(description="Where the run is POSTed (public addresses only, unless allowed)")
    headers: OutboundHeaders = None
    timeout_seconds: json_number(float, gt=0) | None = Field(
        None,
        description="Per call (default: the run's remaining time, which always bounds it; async: how long "
        "the agent may take to accept, 10 s by default)",
    )
    cancel_url: OutboundUrl | None = Field(
        None, description="async: where a cancellation is POSTed (signed, like the run), so the agent stops"
    )


class LambdaConfig(AgentMode):
    function_arn: str = Field(
        pattern=FUNCTION_ARN,
        description="The function's ARN (with an alias or version); the deployment must allow it",
    )


class BedrockConfig(Strict):
    model_id: str = Field(
        min_length=1,
        max_length=256,
        description="A model or inference profile id; the deployment must allow it",
    )
    prompt: str = Field(min_length=1, max_length=200_000, description="The user message; `{{ input }}` fills")
    system: str | None = Field(None, max_length=200_000, description="The system prompt, filled the same way")
    max_tokens: json_number(int, ge=1, le=1_000_000) | None = None
    temperature: json_number(float, ge=0, le=1) | None = None


class PythonRunnable(RunnableFields):
    kind: Literal["python"]
    config: PythonConfig


class HttpRunnable(RunnableFields):
    kind: Literal["http"]
    config: HttpConfig


class LambdaRunnable(RunnableFields):
    kind: Literal["lambda"]
    config: LambdaConfig


class BedrockRunnable(RunnableFields):
    kind: Literal["bedrock"]
    config: BedrockConfig


RunnableSpec = Annotated[
    PythonRunnable | HttpRunnable | LambdaRunnable | BedrockRunnable, Field(discriminator="kind")
]
