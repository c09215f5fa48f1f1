"""The doors that need no key: what this service is, and whether it is alive."""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from runplane.api.common import absolute_url
from runplane.api.openapi import ok

router = Router()
TAG = "Service"


class ServiceInfo(BaseModel):
    name: str
    description: str
    docs: str = Field(description="The API's reference, to read in a browser")
    openapi: str = Field(description="The OpenAPI 3.1 document: generate a client from it")
    health: str
    dialects: dict[str, str] = Field(description="Where each run API's routes start")


class Health(BaseModel):
    status: Literal["ok"]


@router.get(
    "/",
    tags=[TAG],
    summary="What this is and where its documentation lives",
    description="No key needed. Links to `/docs` (the reference), `/openapi.json` and `/health`.",
    responses={200: ok(ServiceInfo, "The service")},
)
def describe() -> ServiceInfo:
    event = router.current_event
    return ServiceInfo(
        name="Runplane",
        description="Runs for AI agents and other long jobs: start one, wait or poll, get a signed callback",
        docs=absolute_url(event, "/docs"),
        openapi=absolute_url(event, "/openapi.json"),
        health=absolute_url(event, "/health"),
        dialects={"re-factor": "/v1/", "Roe AI": "/v1/agents/", "Cotool": "/api/"},
    )


@router.get(
    "/health",
    tags=[TAG],
    summary="Liveness, for load balancers and uptime checks",
    description="No key needed. 200 while the API answers; it calls no AWS service, so it costs nothing "
    "beyond the request and says nothing about DynamoDB or SQS (their alarms do).",
    responses={200: ok(Health, "Alive")},
)
def health() -> Health:
    return Health(status="ok")
