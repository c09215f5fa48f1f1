"""Checks against the seed contracts, transcribed into tests/schemas (the project never reads the seeds).

`run_state.json` is re-factor's RunState; `roe.json` and `cotool.json` hold one definition per response
of those dialects (where Roe AI's reference and its Python SDK, roe-ai 1.1.19, differ, `roe.json` follows
what the SDK parses). `assert_reply` picks the definition a dialect's route and status call for, so a test
that goes through `assert_reply` checks every body it receives.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).parent / "schemas"
UUID = "[0-9a-f-]{36}"

# (dialect, method, path pattern, status) -> definition; the first match wins
ROUTES: list[tuple[str, str, str, int | None, str]] = [
    ("roe", "POST", rf"/v1/agents/run/{UUID}/?", 200, "outputs"),
    ("roe", "POST", rf"/v1/agents/run/{UUID}/?", 504, "job_still_running"),
    ("roe", "POST", rf"/v1/agents/run/{UUID}/async/?", 200, "job_id"),
    ("roe", "POST", rf"/v1/agents/run/{UUID}/async/many/?", 200, "job_ids"),
    ("roe", "POST", rf"/v1/agents/run/{UUID}/versions/{UUID}/?", 200, "outputs"),
    ("roe", "POST", rf"/v1/agents/run/{UUID}/versions/{UUID}/?", 504, "job_still_running"),
    ("roe", "POST", rf"/v1/agents/run/{UUID}/versions/{UUID}/async/?", 200, "job_id"),
    ("roe", "POST", r"/v1/agents/jobs/statuses/?", 200, "job_statuses"),
    ("roe", "POST", r"/v1/agents/jobs/results/?", 200, "job_results"),
    ("roe", "GET", rf"/v1/agents/jobs/{UUID}/status/?", 200, "job_status"),
    ("roe", "GET", rf"/v1/agents/jobs/{UUID}/result/?", 200, "job_result"),
    ("roe", "GET", rf"/v1/agents/{UUID}/jobs/?", 200, "job_page"),
    ("roe", "POST", rf"/v1/agents/{UUID}/jobs/cancel-all/?", 200, "cancel_all"),
    ("roe", "GET", r"/v1/agents/?", 200, "agent_page"),
    ("roe", "GET", rf"/v1/agents/{UUID}/?", 200, "base_agent"),
    ("roe", "GET", rf"/v1/agents/{UUID}/versions/current/?", 200, "agent_version"),
    ("roe", "GET", rf"/v1/agents/{UUID}/versions/{UUID}/?", 200, "agent_version"),
    ("roe", "GET", rf"/v1/agents/{UUID}/versions/?", 200, "agent_versions"),
    ("roe", ".*", r"/v1/agents(/.*)?", None, "error"),
    ("cotool", "POST", rf"/api/agents/{UUID}/run-sync/?", 200, "run_result"),
    ("cotool", "POST", rf"/api/agents/{UUID}/run-sync/?", 202, "run_pending"),
    ("cotool", "POST", rf"/api/agents/{UUID}/run-async/?", 200, "run_started"),
    ("cotool", "GET", rf"/api/agents/{UUID}/run-async/{UUID}/status/?", 200, "run_status"),
    ("cotool", "GET", rf"/api/agents/{UUID}/run-async/{UUID}/result/?", 200, "run_result"),
    ("cotool", "GET", r"/api/agents/?", 200, "agents"),
    ("cotool", ".*", r"/api(/.*)?", 400, "ValidationError"),
    ("cotool", ".*", r"/api(/.*)?", 403, "PermissionError"),
    ("cotool", ".*", r"/api(/.*)?", None, "Error"),
]


@cache
def _validator(name: str, definition: str | None = None) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    if definition is not None:
        schema = {**schema, "$ref": f"#/$defs/{definition}"}
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _assert_valid(validator: Draft202012Validator, document: Any) -> None:
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)
    ]
    assert not problems, (problems, document)


def assert_run_state(document: Any) -> dict[str, Any]:
    """Fail with every violation if `document` is not a seed RunState; return it for chaining."""
    _assert_valid(_validator("run_state"), document)
    return document


def is_dialect(path: str) -> bool:
    return f"{path.split('?', 1)[0]}/".startswith(("/v1/agents/", "/api/"))


def definition_for(method: str, path: str, status: int) -> tuple[str, str]:
    """The (schema file, definition) a dialect's answer must match."""
    path = path.split("?", 1)[0]
    for dialect, verb, pattern, code, definition in ROUTES:
        matches = code == status or (code is None and status >= 400)
        if matches and re.fullmatch(verb, method) and re.fullmatch(pattern, path):
            return dialect, definition
    raise AssertionError(f"no schema for {method} {path} -> {status}: an answer the contract does not know")


def assert_reply(method: str, path: str, status: int, text: str) -> Any:
    """Validate a dialect's response body against its transcribed schema; return the parsed body."""
    if status == 204:
        assert text == "", text
        return None
    document = json.loads(text)
    _assert_valid(_validator(*definition_for(method, path, status)), document)
    return document
