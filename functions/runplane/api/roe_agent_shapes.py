"""Roe AI's agent shapes, mapped from runnables. No I/O.

A runnable is an agent with one version, itself: the version's id is the agent's id and its name
`current`. Roe's caching, tags, post actions and skills have nothing behind them here: they are answered
as off, empty or null.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from runplane.domain.models import Runnable, Shape

VERSION_NAME = "current"
ENGINE_NAMES = {
    "python": "Python function",
    "http": "HTTP endpoint",
    "lambda": "AWS Lambda function",
    "bedrock": "Amazon Bedrock model",
}
JSON_TYPES = frozenset({"number", "integer", "boolean", "object", "array"})


class BaseAgent(BaseModel):
    id: str
    created_at: datetime
    updated_at: datetime
    name: str
    disable_cache: bool = Field(True, description="Runplane never answers a job from a cache")
    cache_failed_jobs: bool = False
    organization_id: str
    engine_class_id: str = Field(description="The runnable's kind")
    current_version_id: str = Field(description="The agent's id: a runnable is its only version")
    job_count: int | None = Field(None, description="Not counted: null")
    most_recent_job: datetime | None = Field(None, description="Not tracked: null")
    engine_name: str
    tags: list[dict[str, Any]] = Field(default_factory=list, description="Always empty")
    skill_generation_state: None = None


class AgentPage(BaseModel):
    count: int = Field(description="Agents on this page")
    next: str | None = Field(description="The next page's URL; null on the last page")
    previous: str | None = Field(description="The previous page's URL; null on the first page")
    results: list[BaseAgent]


class InputDefinition(Shape):
    key: str
    data_type: str = Field(description="`text/plain` for text, `application/json` for other JSON types")
    description: str
    example: str | None = Field(None, description="The schema's first example, as text")


class AgentVersion(BaseModel):
    id: str = Field(description="The agent's id")
    name: str
    version_name: str = Field(description=f"Always `{VERSION_NAME}`")
    created_at: datetime = Field(description="When the runnable was last created or replaced")
    engine_class_id: str
    engine_name: str
    supports_memory: bool = False
    input_definitions: list[InputDefinition] = Field(description="From the runnable's input schema")
    engine_config: dict[str, Any] = Field(description="The runnable's config")
    post_actions: list[dict[str, Any]] = Field(default_factory=list, description="Always empty")
    organization_id: str
    readonly: bool = Field(True, description="Agents are edited through re-factor's runnable routes")
    base_agent: BaseAgent


class CancelAll(BaseModel):
    task_id: None = Field(None, description="Cancelled within the request: no task to follow")
    targeted_count: int = Field(description="Jobs that were waiting or running and are now cancelled")
    note: str


def agent(runnable: Runnable, organization_id: str) -> BaseAgent:
    return BaseAgent(
        id=runnable.id,
        created_at=runnable.created_at,
        updated_at=runnable.updated_at,
        name=runnable.name,
        organization_id=organization_id,
        engine_class_id=runnable.kind,
        current_version_id=runnable.id,
        engine_name=ENGINE_NAMES[runnable.kind],
    )


def _data_type(declared: Any) -> str:
    types = {declared} if isinstance(declared, str) else set(declared or [])
    return "application/json" if types & JSON_TYPES else "text/plain"


def input_definitions(schema: dict[str, Any] | None) -> list[InputDefinition]:
    """One definition per property of the input schema, in its order."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, dict):
        return []
    definitions = []
    for key, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        examples = spec.get("examples")
        example = examples[0] if isinstance(examples, list) and examples else None
        definitions.append(
            InputDefinition(
                key=key,
                data_type=_data_type(spec.get("type")),
                description=str(spec.get("description") or ""),
                example=example if example is None or isinstance(example, str) else json.dumps(example),
            )
        )
    return definitions


def version(runnable: Runnable, organization_id: str) -> AgentVersion:
    return AgentVersion(
        id=runnable.id,
        name=runnable.name,
        version_name=VERSION_NAME,
        created_at=runnable.updated_at,
        engine_class_id=runnable.kind,
        engine_name=ENGINE_NAMES[runnable.kind],
        input_definitions=input_definitions(runnable.input_schema),
        engine_config=runnable.config,
        organization_id=organization_id,
        base_agent=agent(runnable, organization_id),
    )
