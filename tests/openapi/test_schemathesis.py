"""Schemathesis 4 (`st run`) against a local stack's `/openapi.json`: every check, every phase.

The settings are in `schemathesis.toml` at the repository root (seed, examples per operation, phases,
data mode). `RUNPLANE_SCHEMATHESIS_EXAMPLES=N` raises the examples per operation and phase for a longer
run, with no time limit:

    RUNPLANE_SCHEMATHESIS_EXAMPLES=500 .venv/bin/pytest tests/openapi/test_schemathesis.py

On failure the message groups the failures by check and by operation, one reproducing request each; the
full Schemathesis output and its NDJSON report stay in the test's temporary folder, named in the message.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.local_stack import ROOT, Stack

EXAMPLES = os.environ.get("RUNPLANE_SCHEMATHESIS_EXAMPLES", "")
TIMEOUT = 0 if EXAMPLES else 300  # seconds; a longer run has no limit
SHOWN = 600  # characters of a body in the message

pytestmark = [pytest.mark.e2e, pytest.mark.openapi, pytest.mark.timeout(TIMEOUT)]


@dataclass
class Failure:
    check: str  # e.g. "positive_data_acceptance"
    code: str  # e.g. "ST202"
    title: str
    operation: str
    phase: str
    message: str
    request: str  # curl-style
    status: int | None
    answer: str  # shortened
    error: str | None  # the answer's error `code`, if it has one


def decoded(body: dict | None) -> str:
    if not body:
        return ""
    raw = base64.b64decode(body["$base64"]) if "$base64" in body else str(body.get("string", "")).encode()
    return raw.decode(errors="replace")


def shortened(text: str) -> str:
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text)} characters)"


def error_code(text: str) -> str | None:
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    return answer.get("code") if isinstance(answer, dict) else None


def curl(request: dict[str, Any]) -> str:
    line = f"curl -X {request['method']} '{request['uri']}'"
    for name, values in request.get("headers", {}).items():
        if name.lower() not in ("user-agent", "accept", "accept-encoding", "connection", "content-length"):
            shown = ["Bearer $RUNPLANE_API_KEY" if v == "[Filtered]" else v for v in values]  # sanitized
            line += "".join(f" -H '{name}: {value}'" for value in shown)
    body = shortened(decoded(request.get("body")))
    return line + (f" -d '{body}'" if body else "")


def failures_in(ndjson: Path) -> list[Failure]:
    found = []
    for line in ndjson.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event or event["status"] != "failure":
            continue
        recorder = event["recorder"]
        for case_id, checks in recorder["checks"].items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                info = check["failure_info"]["failure"]
                interaction = recorder["interactions"].get(case_id) or {}
                response = interaction.get("response") or {}
                answer = decoded(response.get("content"))
                meta = recorder["cases"].get(case_id, {}).get("value", {}).get("meta") or {}
                found.append(
                    Failure(
                        check=check["name"],
                        code=info.get("code", ""),
                        title=info.get("title", ""),
                        operation=info.get("operation") or recorder["label"],
                        phase=(meta.get("phase") or {}).get("name", event["phase"]),
                        message=info.get("message", ""),
                        request=curl(interaction["request"]) if interaction else "(no request recorded)",
                        status=response.get("status_code"),
                        answer=shortened(answer),
                        error=error_code(answer),
                    )
                )
    return found


def cause(failure: Failure) -> str:
    """The answer's status and error code: what tells one reason for a failure from another."""
    return f"{failure.status} {failure.error}" if failure.error else str(failure.status)


def summary(failures: list[Failure]) -> str:
    """The failures by check, then by operation and answer, with one reproducing request each."""
    groups: dict[str, dict[tuple[str, str], list[Failure]]] = defaultdict(lambda: defaultdict(list))
    for failure in failures:
        groups[f"{failure.code} {failure.check}: {failure.title}"][
            (failure.operation, cause(failure))
        ].append(failure)
    lines = [f"{len(failures)} failing cases"]
    for check, operations in sorted(groups.items()):
        lines.append(f"\n== {check}: {sum(map(len, operations.values()))}")
        for (operation, answer), found in sorted(operations.items()):
            first = found[0]
            phases = ", ".join(sorted({f.phase for f in found}))
            lines.append(f"-- {operation} -> {answer}: {len(found)} (phases: {phases})")
            lines.append("   " + first.message.replace("\n", "\n   "))
            lines.append(f"   {first.request}")
            lines.append(f"   -> {first.status} {first.answer}")
    return "\n".join(lines)


def st_summary(output: str) -> str:
    """Schemathesis' own closing summary and the headings of its errors."""
    closing = output[output.rfind("= SUMMARY =") :].split("\n", 1)[-1] if "= SUMMARY =" in output else output
    errors = ""
    if "= ERRORS =" in output:
        section = output.split("= ERRORS =", 1)[1].split("= FAILURES =", 1)[0]
        errors = "\n".join(section.splitlines()[:30]) + "\n"
    return errors + closing[-4000:]


def test_the_api_keeps_its_openapi_document(stack: Stack, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    location = stack.info["api_url"] + "/openapi.json"
    st = Path(sys.executable).parent / "st"
    command = [str(st), "--config-file", str(ROOT / "schemathesis.toml"), "run", location]
    command += ["--checks", "all", "--report", "ndjson", "--report-dir", str(reports), "--no-color"]
    if EXAMPLES:
        command += ["--max-examples", str(int(EXAMPLES))]
    environment = {
        **os.environ,
        "RUNPLANE_API_KEY": stack.info["api_key"],
        "SCHEMATHESIS_HOOKS": "tests.openapi.hooks",  # the refusals JSON Schema cannot state
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT - 30 if TIMEOUT else None,
        check=False,
    )
    output = done.stdout + done.stderr
    (tmp_path / "schemathesis-output.txt").write_text(output)
    found = [failure for path in reports.glob("*.ndjson") for failure in failures_in(path)]
    where = (
        f"st exited {done.returncode}; output in {tmp_path / 'schemathesis-output.txt'}, report in {reports}"
    )
    if found or done.returncode:
        pytest.fail(f"{where}\n{summary(found)}\n\n{st_summary(output)}", pytrace=False)
