"""Schemathesis hooks (SCHEMATHESIS_HOOKS) for tests/openapi/test_schemathesis.py.

Some requests the schema calls valid are refused for a reason JSON Schema cannot state; each is named
here by the answer's error code, so only that reason is excused and any other refusal still fails. Each
rule is tested by hand elsewhere (tests/integration/test_request_rules.py, test_accounting.py):
- `invalid_cursor`: a cursor is opaque; one the service did not issue is refused, and none can be generated;
- `invalid_period`: `GET /v1/account/usage` spans at most 366 days, the dead callbacks' window 31 (rules across two parameters);
- `page_too_deep`: Roe AI's `page` goes past 100 only with a `cursor` (a rule across two parameters);
- `callback_events_without_url`: `callback_events` needs a `callback_url` (a rule across two fields);
- `timeout_too_long`: how long a run may last depends on its runnable's kind and `config.mode` (a rule across
  two fields, or two resources for a run), and the document gives the longest any may (async agents');
- `validation_error` for `heartbeat_seconds` or `cancel_url` without `mode: async`, and for a report with
  both final `outputs` and an `error` (rules across two fields; tests/integration/test_async_agents.py);
- `unresolvable_callback_url`, and `forbidden_url` for a name that does not resolve: the test stack may
  look up no name but localhost;
- `forbidden_url`, `forbidden_callback_url` for a host name DNS cannot encode (an empty label, one over 63
  characters), which `format: uri` allows;
- `validation_error` for a repeated attachment `fileId`: `uniqueItems` compares whole items only;
- a path parameter a stateful link filled with null (taken from a nullable field, such as the `agent_id`
  of an unknown job in a result batch): Schemathesis sends the text `None`, which is no id;
- 422 `run_failed`/`run_timeout`/`run_cancelled` of a sync run: the request was good, the run was not
  (a Bedrock runnable fails against the local stack's mock), and 422 is that documented outcome.

Resources (tests/e2e/test_resources_http.py tests each rule by hand):
- `content_type_mismatch`: a resource's bytes are not of the media type its data URI (or the answer to its
  `uri`) declares, which only the bytes can tell;
- `invalid_content`: a `data:` URI that RFC 2397 or base64 refuses (its media type, its encoding);
- `fetch_failed`: a `uri` is fetched once, and the test stack may reach no host but loopback;
- `resource_too_large`: more bytes than the deployment allows (its settings, not the document, say how many);
- `resource_not_found` naming only a run's resource `id` or a Cotool attachment's `fileId`: an id of a
  resource of the account, which none generated is (like a cursor);
- `validation_error` for a `directory_path` with a `..` segment or that is absolute (a drive letter too),
  and for a `name` that is `.` or `..`: rules on path segments that a `pattern` states only with
  look-arounds, which the generator does not honour; and for a name or directory segment over 255 bytes
  as UTF-8 (`invalid_request` for the listing's `directory_path` filter): `maxLength` counts characters.
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis

EXCUSED = {
    (400, "invalid_cursor"),
    (400, "invalid_period"),
    (400, "page_too_deep"),
    (400, "callback_events_without_url"),
    (400, "timeout_too_long"),
    (400, "content_type_mismatch"),
    (400, "invalid_content"),
    (400, "fetch_failed"),
    (400, "resource_too_large"),
    (422, "run_failed"),
    (422, "run_timeout"),
    (422, "run_cancelled"),
}

# The fields a reference names a resource by: a run's `resources[i].resource.id`, an attachment's `fileId`.
RESOURCE_ID_FIELD = re.compile(r"^body\.(resources\.\d+\.resource\.id|attachments\.\d+\.fileId)$")
# What a directory_path or name is refused for that its schema's pattern cannot say without look-arounds.
PATH_RULES = ("must not contain '..'", "must be a relative path")
NAME_RULE = "must be a file name"
BYTES_RULE = "bytes as UTF-8"  # a file system's limit on a name, in bytes: `maxLength` counts characters
DOT_NAMES = (".", "..")


def _value(body: Any, field: str) -> Any:
    """The value an issue's dotted `field` (`body.resources.0.resource.name`) names in the request body."""
    value = body
    for segment in field.split(".")[1:]:
        if isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        elif isinstance(value, dict) and segment in value:
            value = value[segment]
        else:
            return None
    return value


def _path_rule_only(issues: list[dict[str, str]], body: Any) -> bool:
    """Every issue is a directory_path with `..`, absolute or with a segment over 255 bytes, or a name that
    is `.` or `..` or over 255 bytes."""

    def excused(issue: dict[str, str]) -> bool:
        field, message = issue.get("field", ""), issue.get("message", "")
        if field.endswith(".directory_path"):
            return any(rule in message for rule in (*PATH_RULES, BYTES_RULE))
        if field.endswith(".name"):
            return BYTES_RULE in message or (NAME_RULE in message and _value(body, field) in DOT_NAMES)
        return False

    return bool(issues) and all(excused(issue) for issue in issues)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure but a positive case refused for one of the reasons above, and Roe AI's 504
    `still_running`: its contract's answer to a sync run that outlives the wait (an async agent's run)."""
    if failure.code == "ST101" and response.status_code == 504:
        try:
            return json.loads(response.content).get("code") != "still_running"
        except (ValueError, AttributeError):
            return True
    if failure.code != "ST202":  # positive_data_acceptance
        return True
    try:
        answer = json.loads(response.content)
    except ValueError:
        return True
    code = answer.get("code") if isinstance(answer, dict) else None
    text = json.dumps(answer.get("issues", [])) + str(answer.get("error", "")) if code else ""
    null_path = any(value in (None, "None") for value in (case.path_parameters or {}).values())
    issues = answer.get("issues") or [] if code else []
    excused = (
        (response.status_code, code) in EXCUSED
        or (code == "validation_error" and null_path)
        or code == "unresolvable_callback_url"
        or (code == "forbidden_url" and "does not resolve" in text)
        or (code in ("forbidden_url", "forbidden_callback_url") and "not a valid host name" in text)
        or (code == "validation_error" and "distinct fileId" in text)
        or (code == "validation_error" and ("is for mode async" in text or "not both" in text))
        or (
            (response.status_code, code) == (400, "resource_not_found")
            and bool(issues)
            and all(RESOURCE_ID_FIELD.match(issue.get("field", "")) for issue in issues)
        )
        or (code in ("validation_error", "invalid_request") and _path_rule_only(issues, case.body))
    )
    return not excused
