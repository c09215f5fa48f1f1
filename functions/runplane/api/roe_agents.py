"""The Roe AI dialect's agent routes (/v1/agents/...): runnables read as agents, each its only version.

Agents are created and edited with re-factor's runnable routes: the Roe AI routes that would do it answer
405 in Roe's error shape.
"""

from __future__ import annotations

from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from runplane.api import roe_agent_shapes as shapes
from runplane.api.common import refusal
from runplane.api.errors import error_response
from runplane.api.openapi import ok
from runplane.api.roe import (
    NO_AGENT,
    TAGS,
    WRONG_ORG,
    Cursor,
    OrganizationId,
    Page,
    PageSize,
    caller,
    fail,
    page_links,
    page_start,
)
from runplane.domain.errors import NotFound
from runplane.logic import runnables

router = Router()
NO_VERSION = (404, "No agent, or no version with this id: an agent's only version has the agent's id")


@router.get(
    "/v1/agents/",
    tags=TAGS,
    summary="List the organization's agents",
    description="The organization's runnables, as agents, in pages; a page number skips the pages before it.",
    responses={200: ok(shapes.AgentPage, "A page of agents"), **fail(400, WRONG_ORG)},
)
def list_agents(
    organization_id: OrganizationId = None, page: Page = 1, page_size: PageSize = 20, cursor: Cursor = None
):
    found = caller(organization_id, "runnables:read")
    start = page_start(
        page,
        cursor,
        lambda at: runnables.list_runnables(found.account_id, page_size, at).next_cursor,
    )
    if start is None and page > 1:  # past the last page
        return shapes.AgentPage(count=0, next=None, previous=page_links(page, None)[1], results=[])
    listed = runnables.list_runnables(found.account_id, page_size, start)
    following, before = page_links(page, listed.next_cursor)
    agents = [shapes.agent(runnable, found.organization_id) for runnable in listed.items]
    return shapes.AgentPage(count=len(agents), next=following, previous=before, results=agents)


@router.get(
    "/v1/agents/<agent_id>/",
    tags=TAGS,
    summary="Get an agent",
    description="The runnable, as an agent; its current version is itself.",
    responses={200: ok(shapes.BaseAgent, "The agent"), **fail(WRONG_ORG, NO_AGENT)},
)
def get_agent(agent_id: UUID, organization_id: OrganizationId = None) -> shapes.BaseAgent:
    found = caller(organization_id, "runnables:read")
    return shapes.agent(runnables.get_runnable(found.account_id, str(agent_id)), found.organization_id)


def _version(agent_id: UUID, organization_id: str | None) -> shapes.AgentVersion:
    found = caller(organization_id, "runnables:read")
    return shapes.version(runnables.get_runnable(found.account_id, str(agent_id)), found.organization_id)


@router.get(
    "/v1/agents/<agent_id>/versions/",
    tags=TAGS,
    summary="List an agent's versions",
    description="One: the agent itself.",
    responses={200: ok(list[shapes.AgentVersion], "The agent's versions"), **fail(WRONG_ORG, NO_AGENT)},
)
def list_versions(agent_id: UUID, organization_id: OrganizationId = None) -> list[shapes.AgentVersion]:
    return [_version(agent_id, organization_id)]


@router.get(
    "/v1/agents/<agent_id>/versions/current/",
    tags=TAGS,
    summary="Get an agent's current version",
    description="The agent itself: the version's id is the agent's.",
    responses={200: ok(shapes.AgentVersion, "The version"), **fail(WRONG_ORG, NO_AGENT)},
)
def current_version(agent_id: UUID, organization_id: OrganizationId = None) -> shapes.AgentVersion:
    return _version(agent_id, organization_id)


@router.get(
    "/v1/agents/<agent_id>/versions/<version_id>/",
    tags=TAGS,
    summary="Get an agent version",
    description="The only version of an agent has the agent's id.",
    responses={200: ok(shapes.AgentVersion, "The version"), **fail(WRONG_ORG, NO_VERSION)},
)
def get_version(
    agent_id: UUID, version_id: UUID, organization_id: OrganizationId = None
) -> shapes.AgentVersion:
    version = _version(agent_id, organization_id)
    if version_id != agent_id:
        raise NotFound("Version", str(version_id))
    return version


READ_ONLY = (
    "Agents are not created or edited through Roe AI's API here: manage them as runnables, with "
    "re-factor's /v1/runnables routes"
)


def _read_only(allow: str) -> Response:
    response = error_response(405, READ_ONLY, "agents_read_only")
    response.headers["Allow"] = allow
    return response


READS = "GET, HEAD, OPTIONS"


@router.post("/v1/agents/", include_in_schema=False)
@refusal
def create_agent():
    return _read_only(READS)


@router.route("/v1/agents/<agent_id>/", method=["PUT", "PATCH", "DELETE"], include_in_schema=False)
@refusal
def edit_agent(agent_id: str):
    return _read_only(READS)


@router.post("/v1/agents/<agent_id>/duplicate/", include_in_schema=False)
@refusal
def duplicate_agent(agent_id: str):
    return _read_only("OPTIONS")


@router.post("/v1/agents/<agent_id>/versions/", include_in_schema=False)
@refusal
def create_version(agent_id: str):
    return _read_only(READS)


@router.route(
    "/v1/agents/<agent_id>/versions/<version_id>/", method=["PUT", "PATCH", "DELETE"], include_in_schema=False
)
@refusal
def edit_version(agent_id: str, version_id: str):
    return _read_only(READS)
