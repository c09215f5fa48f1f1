"""The served OpenAPI document makes a typed Python client, and that client speaks to the local stack.

openapi-python-client generates the client into a temporary folder (nothing is installed). Operations
are found by (method, path), read from each generated module, so a renamed operationId changes nothing.
"""

from __future__ import annotations

import ast
import base64
import enum
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import time
import typing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.local_stack import Stack
from tests.openapi.conftest import start_guarded_stack
from tests.receiver import Answer, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.openapi]

PACKAGE = "runplane_api_client"
METHODS = ("get", "put", "post", "delete", "patch")
RUNNING = ("waiting", "running")


def shape(path: str) -> str:
    """A path with its parameter names blanked: the generator renames them (`{agentId}` -> `{agent_id}`)."""
    return re.sub(r"\{[^}]*\}", "{}", path)


@dataclass
class Generated:
    output: str  # what the generator printed
    models: ModuleType
    client: ModuleType
    operations: dict[tuple[str, str], ModuleType]  # (METHOD, shape(path)) -> generated module


@pytest.fixture(scope="module")
def generated(document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    folder = tmp_path_factory.mktemp("client")
    (folder / "openapi.json").write_text(json.dumps(document))
    tools = Path(sys.executable).parent  # the generator formats its output with ruff from here
    command = [str(tools / "openapi-python-client"), "generate", "--meta", "none"]
    command += ["--path", str(folder / "openapi.json"), "--output-path", str(folder / PACKAGE)]
    environment = {**os.environ, "PATH": os.pathsep.join([str(tools), os.environ.get("PATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    sys.path.insert(0, str(folder))
    try:
        operations = {}
        for file in sorted((folder / PACKAGE / "api").rglob("*.py")):
            if file.name != "__init__.py":
                module = importlib.import_module(".".join(file.relative_to(folder).with_suffix("").parts))
                source = file.read_text()
                method = re.search(r'"method": "(\w+)"', source)
                url = re.search(r'"url": "([^"]*)"', source)
                assert method, f"{file}: no method in _get_kwargs"
                assert url, f"{file}: no url in _get_kwargs"
                operations[(method[1].upper(), shape(url[1]))] = module
        yield Generated(
            output,
            importlib.import_module(f"{PACKAGE}.models"),
            importlib.import_module(f"{PACKAGE}.client"),
            operations,
        )
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def test_generation_prints_no_warnings(generated: Generated) -> None:
    assert "warning" not in generated.output.lower(), generated.output


def answer_blocks(module: ModuleType) -> dict[int, str]:
    """The source of each `if response.status_code == N:` branch of the module's `_parse_response`."""
    source = Path(module.__file__ or "").read_text()
    function = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "_parse_response"
    )
    blocks = {}
    for node in function.body:
        test = node.test if isinstance(node, ast.If) else None
        if (
            isinstance(test, ast.Compare)
            and ast.unparse(test.left) == "response.status_code"
            and isinstance(test.comparators[0], ast.Constant)
        ):
            blocks[test.comparators[0].value] = "\n".join(ast.unparse(line) for line in node.body)
    return blocks


def success_problems(method: str, path: str, operation: dict[str, Any], generated: Generated) -> list[str]:
    """Why this operation has no typed success answer, in the document or in the generated client."""
    name = f"{method} {path}"
    successes = {int(s): r for s, r in operation.get("responses", {}).items() if s.startswith("2")}
    if not successes:
        return [f"{name}: no 2xx answer documented"]
    module = generated.operations.get((method, shape(path)))
    blocks = answer_blocks(module) if module else {}
    problems = [] if module else [f"{name}: no generated module"]
    for status, answer in sorted(successes.items()):
        schema = answer.get("content", {}).get("application/json", {}).get("schema")
        block = blocks.get(status)
        if status == 204:
            if answer.get("content"):
                problems.append(f"{name} 204: documents a body")
            continue
        if schema in (None, {}, True):
            problems.append(f"{name} {status}: no application/json schema")
        if module and block is None:
            problems.append(f"{name} {status}: not parsed by the generated client")
        elif module and not (".from_dict(" in block or re.search(r"cast\((?!Any\b)\w", block or "")):
            problems.append(f"{name} {status}: parsed untyped: {block!r}")
    return problems


def test_every_operation_has_a_typed_success_answer(document: dict[str, Any], generated: Generated) -> None:
    found = {(m, p): success_problems(m, p, op, generated) for m, p, op in operations(document)}
    problems = [problem for listed in found.values() for problem in listed]
    untyped = sum(1 for listed in found.values() if listed)
    summary = f"{untyped} of {len(found)} operations lack a typed success answer:\n"
    assert not problems, summary + "\n".join(problems)


def test_no_operation_documents_the_resolvers_validation_error(document: dict[str, Any]) -> None:
    """422 `HTTPValidationError` is what the resolver documents by default; the service never sends it."""
    components = sorted(document.get("components", {}).get("schemas", {}))
    assert "HTTPValidationError" not in components, "HTTPValidationError is a component"
    defaults = [
        f"{method} {path}"
        for method, path, op in operations(document)
        if "HTTPValidationError" in json.dumps(op.get("responses", {}).get("422", {}))
        or op.get("responses", {}).get("422", {}).get("description") == "Validation Error"
    ]
    assert not defaults, f"{len(defaults)} operations document the resolver's 422: {defaults}"


def value(field: Any) -> Any:
    return field.value if isinstance(field, enum.Enum) else field


class Api:
    """Calls through the generated client by (method, path); each answer must be parsed into its type."""

    def __init__(
        self, generated: Generated, document: dict[str, Any], stack: Stack, token: str | None = None
    ):
        self.generated, self.document = generated, document
        self.client = generated.client.AuthenticatedClient(
            base_url=stack.info["api_url"],
            token=token or stack.info["api_key"],
            raise_on_unexpected_status=True,
        )
        self.client = self.client.with_timeout(generated.client.httpx.Timeout(30))

    def __call__(self, method: str, path: str, expect: int | set[int], **arguments: Any) -> Any:
        module = self.generated.operations[(method, shape(path))]
        hints = typing.get_type_hints(module.sync_detailed)
        sent = {name: self._coerce(hints[name], given) for name, given in arguments.items()}
        reply = module.sync_detailed(client=self.client, **sent)
        status = int(reply.status_code)
        expected = {expect} if isinstance(expect, int) else expect
        assert status in expected, f"{method} {path}: {status} {reply.content[:500]!r}"
        if status == 204:
            assert reply.parsed is None
        else:
            self._assert_typed(method, path, status, reply.parsed)
        return reply.parsed

    def _coerce(self, hint: Any, given: Any) -> Any:
        """A plain value as the parameter's declared type: a model from a dict (the first member of a
        union that takes it), an enum, a UUID."""
        for kind in typing.get_args(hint) or (hint,):
            if isinstance(given, dict) and hasattr(kind, "from_dict"):
                try:
                    return kind.from_dict(given)
                except (KeyError, ValueError, TypeError):
                    continue
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                return kind(given)
            if kind is uuid.UUID and isinstance(given, str):
                return uuid.UUID(given)
        return given

    def _assert_typed(self, method: str, path: str, status: int, parsed: Any) -> None:
        where = f"{method} {path} {status}"
        answer = self.document["paths"][path][method.lower()]["responses"][str(status)]
        schema = answer["content"]["application/json"]["schema"]
        assert parsed is not None, f"{where}: not parsed"
        items = parsed if schema.get("type") == "array" else [parsed]
        for item in items:
            assert not isinstance(item, dict), f"{where}: a raw dict"
            if schema.get("type") != "string" and schema.get("items", {}).get("type") != "string":
                assert type(item).__module__.startswith(f"{PACKAGE}.models."), f"{where}: {type(item)}"


def wait(api: Api, path: str, done: Any, seconds: float = 30, **arguments: Any) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        parsed = api("GET", path, 200, **arguments)
        if done(parsed) or time.monotonic() > deadline:
            return parsed
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's stack also calls an agent on loopback (the async agent of the flow)."""
    started = start_guarded_stack(
        tmp_path_factory.mktemp("stack"), RUNPLANE_SYNC_WAIT_SECONDS="5", RUNPLANE_ALLOW_LOOPBACK="1"
    )
    yield started
    started.stop()


def test_a_flow_through_the_generated_client(
    stack: Stack, document: dict[str, Any], generated: Generated
) -> None:
    api = Api(generated, document, stack)
    org = stack.info["account_id"]
    spec = {"name": "openapi-echo", "kind": "python", "config": {"function": "echo"}}
    echo = api("POST", "/v1/runnables", 201, body=spec).id

    # re-factor: async and sync runs, a run, pages of runs
    started = api("POST", "/v1/runnable/{id}/runs", 202, id=echo, mode="async", body={"inputs": {"q": 1}})
    synced = api("POST", "/v1/runnable/{id}/runs", 200, id=echo, mode="sync", body={"inputs": {"q": 2}})
    assert value(synced.status) == "completed"
    assert synced.to_dict()["result"]["outputs"] == {"q": 2}
    state = wait(api, "/v1/run/{run_id}", lambda s: value(s.status) not in RUNNING, run_id=started.id)
    assert (value(state.status), state.to_dict()["result"]["outputs"]) == ("completed", {"q": 1})
    events = api("GET", "/v1/run/{run_id}/events", 200, run_id=started.id, after=0, wait=1)
    assert events.done
    assert [value(e.reason) for e in events.events] == ["accepted", "claimed", "ended"]
    assert [e.seq for e in events.events] == [1, 2, 3]
    assert api("GET", "/v1/run/{run_id}/logs", 200, run_id=started.id).lines == []
    watch = api("POST", "/v1/run/{run_id}/events/token", 201, run_id=started.id, seconds=60)
    assert watch.token.startswith("rpw_")
    first = api("GET", "/v1/runs", 200, limit=1)
    assert len(first.items) == 1
    assert first.next_cursor
    second = api("GET", "/v1/runs", 200, limit=1, cursor=first.next_cursor)
    assert [run.id for run in second.items] != [run.id for run in first.items]

    # an async agent: handed the run, it reports with its run token through the generated client too
    with receiving(Answer(status=202, body=b"")) as agent:
        spec = {"name": "openapi-agent", "kind": "http", "config": {"url": agent.url, "mode": "async"}}
        agent_runnable = api("POST", "/v1/runnables", 201, body=spec).id
        handed = api("POST", "/v1/runnable/{id}/runs", 202, id=agent_runnable, body={"inputs": {"q": 5}}).id
        deadline = time.monotonic() + 30
        while not agent.received and time.monotonic() < deadline:
            time.sleep(0.05)
    envelope = json.loads(agent.received[0].body)
    assert envelope["report_url"] == f"{stack.info['api_url']}/v1/run/{handed}/report"
    reporter = Api(generated, document, stack, token=envelope["run_token"])
    path = "/v1/run/{run_id}/report"
    going = reporter("POST", path, 200, run_id=handed, body={"state": {"step": 1}, "logs": ["reading"]})
    assert value(going.status) == "running"
    assert going.cancel_requested is False
    ended = reporter("POST", path, 200, run_id=handed, body={"outputs": {"q": 5}})
    assert value(ended.status) == "completed"
    reporter("POST", path, 409, run_id=handed, body={"error": {"message": "too late"}})
    api("POST", path, 401, run_id=handed, body={})  # an API key is no run token
    shown = api("GET", "/v1/run/{run_id}", 200, run_id=handed)
    assert shown.to_dict()["result"]["outputs"] == {"q": 5}
    assert shown.to_dict()["state"] == {"step": 1}

    # cancel: a waiting run (200), a running one (202), one that ended (409)
    spec = {"name": "openapi-sleep", "kind": "python", "config": {"function": "sleep"}, "max_concurrency": 1}
    sleep = api("POST", "/v1/runnables", 201, body=spec).id
    body = {"inputs": {"seconds": 30}}
    running = api("POST", "/v1/runnable/{id}/runs", 202, id=sleep, body=body).id
    wait(api, "/v1/run/{run_id}", lambda s: value(s.status) == "running", run_id=running)
    waiting = api("POST", "/v1/runnable/{id}/runs", 202, id=sleep, body=body).id
    assert value(api("GET", "/v1/run/{run_id}", 200, run_id=waiting).status) == "waiting"
    assert value(api("POST", "/v1/run/{run_id}/cancel", 200, run_id=waiting).status) == "cancelled"
    api("POST", "/v1/run/{run_id}/cancel", 202, run_id=running)
    api("POST", "/v1/run/{run_id}/cancel", 409, run_id=started.id)

    runnables = api("GET", "/v1/runnables", 200)
    assert {echo, sleep} <= {r.id for r in runnables.items}
    assert api("GET", "/v1/account", 200).account_id == org
    assert stack.info["key_id"] in {key.id for key in api("GET", "/v1/keys", 200).items}

    # Roe AI: an agent is a runnable, a job is a run
    job = api(
        "POST", "/v1/agents/run/{agent_id}/async/", 200, agent_id=echo, organization_id=org, body={"q": 3}
    )
    status = wait(api, "/v1/agents/jobs/{job_id}/status/", lambda s: s.status == 3, job_id=job)
    assert status.status == 3
    result = api("GET", "/v1/agents/jobs/{job_id}/result/", 200, job_id=job, organization_id=org)
    assert result.agent_id == echo

    # Cotool: an agent is a runnable
    run = api("POST", "/api/agents/{agentId}/run-async", 200, agent_id=echo, body={"inputs": {"q": 4}}).run_id
    path = "/api/agents/{agentId}/run-async/{runId}/status"
    status = wait(api, path, lambda s: value(s.status) == "done", agent_id=echo, run_id=run)
    assert value(status.status) == "done"
    result = api("GET", "/api/agents/{agentId}/run-async/{runId}/result", 200, agent_id=echo, run_id=run)
    assert result.to_dict()["structuredOutputResult"] == {"q": 4}
    assert echo in {agent.id for agent in api("GET", "/api/agents", 200)}


def test_resources_through_the_generated_client(
    stack: Stack, document: dict[str, Any], generated: Generated
) -> None:
    """Create, upload (to the presigned POST, outside the client), list, get, use in a run and delete a
    resource; every answer, the 400 and 404 error bodies too, is parsed into its type."""
    api = Api(generated, document, stack)
    directory = f"openapi/{uuid.uuid4().hex[:8]}"
    text = "hello, resources ✓\n".encode()
    content = "data:text/plain;base64," + base64.b64encode(text).decode()
    body = {"name": "hello.txt", "directory_path": directory, "content": content, "tags": ["t"]}
    created = api("POST", "/v1/resources", 201, body={**body, "metadata": {"n": 1}})
    assert (value(created.status), value(created.source)) == ("ready", "content")
    assert (created.size, created.sha256) == (len(text), hashlib.sha256(text).hexdigest())
    assert created.metadata.to_dict() == {"n": 1}
    assert isinstance(created.created_at, datetime)

    started = api(
        "POST",
        "/v1/resources/uploads",
        201,
        body={"name": "data.bin", "directory_path": directory, "content_type": "application/octet-stream"},
    )
    assert value(started.resource.status) == "pending"
    assert isinstance(started.upload.expires_at, datetime)
    assert started.upload.max_bytes > 0
    data = os.urandom(4096)
    sent = requests.post(
        started.upload.url,
        data=started.upload.fields.to_dict(),
        files={"file": ("data.bin", data)},
        timeout=60,
    )
    assert sent.status_code in (200, 201, 204), sent.text[:500]
    uploaded = api("GET", "/v1/resources/{id}", 200, id=started.resource.id)
    assert (value(uploaded.status), uploaded.size) == ("ready", len(data))
    assert isinstance(uploaded.download_url_expires_at, datetime)
    assert requests.get(uploaded.download_url, timeout=30).content == data

    page = api("GET", "/v1/resources", 200, directory_path=directory)
    assert [r.id for r in page.items] == [started.resource.id, created.id]
    assert [r.id for r in api("GET", "/v1/resources", 200, directory_path=directory, tag="t").items] == [
        created.id
    ]
    first = api("GET", "/v1/resources", 200, directory_path=directory, limit=1)
    assert [r.id for r in first.items] == [started.resource.id]
    shown = api("GET", "/v1/resources/{id}", 200, id=created.id)
    assert requests.get(shown.download_url, timeout=30).content == text

    spec = {"name": "openapi-resources-echo", "kind": "python", "config": {"function": "echo"}}
    echo = api("POST", "/v1/runnables", 201, body=spec).id
    run = {"inputs": {"q": 1}, "resources": [{"name": "doc", "resource": {"id": created.id}}]}
    state = api("POST", "/v1/runnable/{id}/runs", 200, id=echo, mode="sync", body=run)
    assert value(state.status) == "completed"

    mismatch = {**body, "content": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}
    error = api("POST", "/v1/resources", 400, body=mismatch)
    assert error.code == "content_type_mismatch"
    assert [issue.to_dict()["field"] for issue in error.issues] == ["body.content"]
    huge = {"name": "huge.bin", "directory_path": directory, "size": 5 * 1024**3 + 1}
    assert api("POST", "/v1/resources/uploads", 400, body=huge).code == "resource_too_large"
    unknown = {"inputs": {}, "resources": [{"name": "doc", "resource": {"id": str(uuid.uuid4())}}]}
    assert api("POST", "/v1/runnable/{id}/runs", 400, id=echo, body=unknown).code == "resource_not_found"

    api("DELETE", "/v1/resources/{id}", 204, id=created.id)
    assert api("GET", "/v1/resources/{id}", 404, id=created.id).code == "resource_not_found"
    assert api("DELETE", "/v1/resources/{id}", 404, id=created.id).code == "resource_not_found"
    assert [r.id for r in api("GET", "/v1/resources", 200, directory_path=directory).items] == [
        started.resource.id
    ]
