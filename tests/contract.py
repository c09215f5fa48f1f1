"""Checks against the seed contract, transcribed into tests/schemas (the project never reads the seeds)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).parent / "schemas"


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return Draft202012Validator(schema, format_checker=FormatChecker())


def assert_run_state(document: Any) -> dict[str, Any]:
    """Fail with every violation if `document` is not a seed RunState; return it for chaining."""
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator("run_state").iter_errors(document)
    ]
    assert not problems, problems
    return document
