"""The `bedrock` kind: a prompt template filled from the run's inputs, answered by a Bedrock model.

`{{ name }}` (or `{{ a.b }}` for a nested value) in `prompt` and `system` is replaced by that input: text
as is, anything else as JSON. Outputs are `{"text": ...}`, or, when the runnable declares an
`output_schema`, the object the model returns through a tool with that schema (validated against it).
"""

from __future__ import annotations

import json
import re
from typing import Any

from runplane.domain.configs import BedrockConfig
from runplane.domain.errors import Issue
from runplane.domain.states import ErrorCode
from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.kinds import require_allowed
from runplane.settings import Settings

ISOLATED = False
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
RESPOND_TOOL = "respond"


Config = BedrockConfig


def check(config: Config, settings: Settings) -> None:
    require_allowed(config.model_id, settings.bedrock_models, "model_id", "model")


def check_inputs(config: Config, inputs: dict[str, Any]) -> list[Issue]:
    """Every placeholder of the templates must have a value in `inputs`."""
    return [
        Issue(f"body.inputs.{name}", "required by the runnable's prompt template")
        for name in _placeholders(config)
        if _lookup(inputs, name) is _MISSING
    ]


def invoke(config: Config, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from runplane.adapters.runtimes import converse

    if missing := check_inputs(config, inputs):
        raise RunFailed(f"inputs lack {', '.join(i.field for i in missing)}", ErrorCode.invalid_inputs)
    try:
        response = converse(_request(config, inputs, ctx.output_schema))
    except ClientError as problem:
        error = problem.response.get("Error", {})
        raise RunFailed(
            f"Bedrock: {error.get('Code')}: {error.get('Message')}", ErrorCode.bedrock_error
        ) from None
    except BotoCoreError as problem:
        raise RunFailed(f"Bedrock could not be reached: {problem}", ErrorCode.bedrock_error) from None
    usage = response["usage"]
    cache_read = usage.get("cacheReadInputTokens", 0)
    ctx.record_usage(
        "bedrock",
        config.model_id,
        prompt_tokens=usage["inputTokens"] + cache_read + usage.get("cacheWriteInputTokens", 0),
        completion_tokens=usage["outputTokens"],
        cached_tokens=cache_read,
    )
    ctx.add_metadata(
        stop_reason=response["stopReason"], latency_ms=response.get("metrics", {}).get("latencyMs")
    )
    blocks = response["output"]["message"]["content"]
    if ctx.output_schema is None:
        return {"text": "".join(block["text"] for block in blocks if "text" in block)}
    answer = next(
        (b["toolUse"]["input"] for b in blocks if b.get("toolUse", {}).get("name") == RESPOND_TOOL), None
    )
    if not isinstance(answer, dict):
        raise RunFailed(
            f"the model gave no structured output (stop reason {response['stopReason']})", "invalid_output"
        )
    return answer


def _request(config: Config, inputs: dict[str, Any], output_schema: dict[str, Any] | None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "modelId": config.model_id,
        "messages": [{"role": "user", "content": [{"text": _fill(config.prompt, inputs)}]}],
    }
    if config.system:
        request["system"] = [{"text": _fill(config.system, inputs)}]
    inference = {"maxTokens": config.max_tokens, "temperature": config.temperature}
    if settings := {k: v for k, v in inference.items() if v is not None}:
        request["inferenceConfig"] = settings
    if output_schema is not None:
        tool = {
            "name": RESPOND_TOOL,
            "description": "Give the answer",
            "inputSchema": {"json": output_schema},
        }
        request["toolConfig"] = {
            "tools": [{"toolSpec": tool}],
            "toolChoice": {"tool": {"name": RESPOND_TOOL}},
        }
    return request


_MISSING = object()


def _placeholders(config: Config) -> list[str]:
    names = PLACEHOLDER.findall(config.prompt) + PLACEHOLDER.findall(config.system or "")
    return list(dict.fromkeys(names))


def _lookup(inputs: dict[str, Any], name: str) -> Any:
    value: Any = inputs
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _fill(template: str, inputs: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        found = _lookup(inputs, match.group(1))
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return PLACEHOLDER.sub(value, template)
