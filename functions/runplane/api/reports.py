"""What asynchronous agents call (re-factor dialect): the report endpoint, authenticated by the run's run
token instead of an API key (logic/agent_reports.py)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header

from runplane.api.common import Dialect
from runplane.api.gate import body_bytes
from runplane.api.openapi import errors, ok
from runplane.domain.agents import MAX_REPORT_BYTES, ReportAnswer
from runplane.domain.errors import PayloadTooLarge
from runplane.domain.models import ErrorBody
from runplane.domain.reports import Report
from runplane.logic import agent_reports

router = Router()
SCHEME = "runToken"


@router.post(
    "/v1/run/<run_id>/report",
    tags=[Dialect.refactor.value],
    security=[{SCHEME: []}],
    summary="Report on a run (asynchronous agents)",
    description="An async agent's report on the run it was sent, with `Authorization: Bearer <run_token>` "
    "(the token in the run's envelope, not an API key). `{}` is a heartbeat. A report may carry `state`, "
    "partial `outputs` (`partial: true`), `logs`, `usage` and `metadata`; `outputs` without `partial`, or "
    "an `error`, end the run (the first end wins: later reports are 409). The answer says whether the run "
    f"was cancelled and by when to report again. At most {MAX_REPORT_BYTES} bytes per report.",
    responses={
        200: ok(ReportAnswer, "Recorded; the run as it is now"),
        **errors(
            ErrorBody,
            (401, "No run token, another run's or an earlier attempt's, or one whose run's time is up"),
            (404, "No run with this id"),
            (
                409,
                "The run has already ended (`run_terminal`), or changed meanwhile (`run_busy`): report again",
            ),
        ),
    },
)
def report_run(
    run_id: UUID,
    report: Annotated[Report, Body()],
    authorization: Annotated[
        str | None, Header(alias="Authorization", description="`Bearer <run_token>`")
    ] = None,
) -> ReportAnswer:
    event = router.current_event
    if body_bytes(event.body or "", encoded=event.is_base64_encoded) > MAX_REPORT_BYTES:
        raise PayloadTooLarge(MAX_REPORT_BYTES)
    return agent_reports.receive(str(run_id), authorization, report)
