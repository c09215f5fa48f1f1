"""The api function's cold start: importing its handler loads no dialect's routes, a request loads its own
dialect's alone, and no route of a dialect matches a path of another (what makes loading one enough)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import runplane.api
from runplane.api.app import ROUTES
from runplane.api.common import PREFIXES, Dialect, dialect_of

ROOT = Path(__file__).resolve().parents[2]
MODULES = {
    Dialect.refactor: {"service", "v1", "callbacks", "resources", "watch", "reports"},
    Dialect.roe: {"roe", "roe_jobs", "roe_agents", "roe_shapes", "roe_agent_shapes"},
    Dialect.cotool: {"cotool", "cotool_shapes"},
}
OPENAPI_MODELS = "aws_lambda_powertools.event_handler.openapi.models"  # Powertools' models of the document
ROE_PATH, COTOOL_PATH, REFACTOR_PATH = (
    "/v1/agents/jobs/00000000-0000-4000-8000-000000000000/status/",
    "/api/agents",
    "/v1/runs",
)
# Imports the handler, then calls it (moto behind it) for a path of each dialect in turn, and prints which
# runplane.api modules were loaded after each step, and whether the document's models were
PROBE = f"""
import json, os, sys

import runplane.handlers.api as handler

def loaded():
    names = [name.removeprefix("runplane.api.") for name in sys.modules if name.startswith("runplane.api.")]
    return {{"modules": names, "openapi_models": {OPENAPI_MODELS!r} in sys.modules}}

steps = {{"import": loaded()}}
import boto3
from moto import mock_aws

from runplane.local import moto_atomic
from runplane.local.gateway import proxy_event
from runplane.local.lambda_context import LocalLambdaContext
from runplane.local.provision import provision
from runplane.logic import services
from runplane.logic.keys import create_key

moto_atomic.install()
with mock_aws():
    os.environ.update(provision(boto3.session.Session(), "imports"))
    services.reset()
    headers = {{"Authorization": ["Bearer " + create_key("imports").token]}}
    for path in {[ROE_PATH, COTOOL_PATH, REFACTOR_PATH]!r}:
        event = proxy_event("GET", path, headers, b"", "127.0.0.1")
        status = handler.lambda_handler(event, LocalLambdaContext("api"))["statusCode"]
        steps[path] = {{"status": status, **loaded()}}
print(json.dumps(steps))
"""
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}


@pytest.fixture(scope="module")
def steps() -> dict[str, dict]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "RUNPLANE_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**environment, **ENVIRONMENT},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def loaded_dialects(step: dict) -> set[Dialect]:
    modules = set(step["modules"])
    return {dialect for dialect, names in MODULES.items() if names & modules}


def test_importing_the_handler_loads_no_dialects_routes_nor_the_documents_models(steps: dict) -> None:
    assert loaded_dialects(steps["import"]) == set()
    assert not steps["import"]["openapi_models"]


def test_each_request_loads_its_own_dialects_routes_alone(steps: dict) -> None:
    roe, cotool, refactor = steps[ROE_PATH], steps[COTOOL_PATH], steps[REFACTOR_PATH]
    assert roe["status"] == 404  # answered by the Roe AI route: no such job
    assert loaded_dialects(roe) == {Dialect.roe}
    assert MODULES[Dialect.roe] <= set(roe["modules"])
    assert cotool["status"] == 200
    assert loaded_dialects(cotool) == {Dialect.roe, Dialect.cotool}
    assert refactor["status"] == 200
    assert loaded_dialects(refactor) == set(Dialect)
    assert not refactor["openapi_models"]  # built with the OpenAPI document only


def test_every_router_is_some_dialects() -> None:
    routers = {
        module.name
        for module in pkgutil.iter_modules(runplane.api.__path__)
        if hasattr(importlib.import_module(f"runplane.api.{module.name}"), "router")
    }
    assert routers == {name for names in ROUTES.values() for name in names}


def only_its_dialects(rule: str, dialect: Dialect) -> bool:
    """Whether every path `rule` matches is a path of `dialect`: a path that starts with what comes before
    its first parameter."""
    literal, parameter, _ = rule.partition("<")
    if not parameter:
        return dialect_of(rule) is dialect
    if dialect is Dialect.refactor:
        return not any(prefix.startswith(literal) or literal.startswith(prefix) for prefix, _ in PREFIXES)
    return any(literal.startswith(prefix) for prefix, its in PREFIXES if its is dialect)


@pytest.mark.parametrize("dialect", list(Dialect))
def test_no_route_of_a_dialect_matches_a_path_of_another(dialect: Dialect) -> None:
    for name in ROUTES[dialect]:
        router = importlib.import_module(f"runplane.api.{name}").router
        rules = {route[0] for route in router._routes}  # the router keeps no public list of its routes
        assert all(only_its_dialects(rule, dialect) for rule in rules), (name, rules)


def test_the_check_tells_a_rule_that_would_match_another_dialects_paths() -> None:
    assert not only_its_dialects("/v1/<kind>/jobs", Dialect.refactor)  # /v1/agents/jobs is Roe AI's
    assert not only_its_dialects("/api", Dialect.refactor)
    assert not only_its_dialects("/v1/agents<suffix>", Dialect.roe)  # /v1/agentsx is re-factor's
    assert only_its_dialects("/v1/agents/<agent_id>/", Dialect.roe)
