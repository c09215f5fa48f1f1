"""The `bedrock` kind: a prompt template filled from the run's inputs, answered by a Bedrock model.

`{{ name }}` (or `{{ a.b }}` for a nested value) in `prompt` and `system` is replaced by that input: text
as is, anything else as JSON. Outputs are `{"text": ...}`, or, when the runnable declares an
`output_schema`, the object the model returns through a tool with that schema (validated against it).
The run's resources that the Converse API takes (images; PDF, CSV, Word, Excel, HTML, text and Markdown
documents, within its sizes and counts) go with the prompt; others are left out, with a log line.
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
    request = _request(config, inputs, ctx.output_schema, _attachments(ctx))
    try:
        response = converse(request)
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


def _request(
    config: Config,
    inputs: dict[str, Any],
    output_schema: dict[str, Any] | None,
    attachments: list[dict[str, Any]],
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "modelId": config.model_id,
        "messages": [{"role": "user", "content": [{"text": _fill(config.prompt, inputs)}, *attachments]}],
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


# What Converse takes as content blocks: media type -> (block, format), and its limits.
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
MAX_IMAGES, MAX_IMAGE_BYTES = 20, 3_932_160  # 3.75 MB
MAX_DOCUMENTS, MAX_DOCUMENT_BYTES = 5, 4_718_592  # 4.5 MB
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")


def _attachments(ctx: RunContext) -> list[dict[str, Any]]:
    """The run's resources as Converse content blocks, in the order the run names them."""
    blocks: list[dict[str, Any]] = []
    counts = {"image": 0, "document": 0}
    names: set[str] = set()
    for name, resource in ctx.resources.items():
        if resource.content_type in IMAGE_FORMATS:
            block, form, limit, most = (
                "image",
                IMAGE_FORMATS[resource.content_type],
                MAX_IMAGE_BYTES,
                MAX_IMAGES,
            )
        elif resource.content_type in DOCUMENT_FORMATS:
            block, form = "document", DOCUMENT_FORMATS[resource.content_type]
            limit, most = MAX_DOCUMENT_BYTES, MAX_DOCUMENTS
        else:
            ctx.log(f"resource {name!r} ({resource.content_type}) is not a type Bedrock takes: not sent")
            continue
        if (resource.size or 0) > limit or counts[block] >= most:
            ctx.log(
                f"resource {name!r} is over Bedrock's limits ({most} {block}s of {limit} bytes): not sent"
            )
            continue
        counts[block] += 1
        try:
            content: dict[str, Any] = {"format": form, "source": {"bytes": resource.read_bytes()}}
        except FileNotFoundError as missing:
            raise RunFailed(str(missing), ErrorCode.resource_missing) from None
        if block == "document":  # a document needs a name of letters, digits, spaces, -()[]; unique
            title = " ".join(_NOT_IN_A_NAME.sub(" ", name).split())[:190] or "document"
            content["name"] = title if title not in names else f"{title} ({counts[block]})"
            names.add(content["name"])
        blocks.append({block: content})
    return blocks


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
