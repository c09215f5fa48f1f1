"""Runs from SQS producers: one intake message starts one run, however often it is delivered."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from runplane.domain.errors import RunplaneError
from runplane.domain.ids import intake_run_id
from runplane.domain.models import ACCOUNT_ID_PATTERN, IntakeMessage, RunRecord, utcnow
from runplane.domain.states import Status
from runplane.logic.ending import fail_outcome
from runplane.logic.runs import start_run
from runplane.logic.services import services
from runplane.observability import logger

INTAKE_CREATOR = "intake"


def accept_intake(body: str, message_id: str) -> str | None:
    """Start the run a message asks for and return its id. A message that can never succeed is parked
    in the intake DLQ with the reason attached (and None returned) rather than retried; if it names a
    known account, a failed run under the id the producer expects explains the rejection."""
    fields: Any = None
    try:
        fields = json.loads(body)
        message = IntakeMessage.model_validate(fields)
        accepted = start_run(
            message.account_id,
            str(message.runnable_id),
            message,
            created_by=INTAKE_CREATOR,
            idempotency_key=message.idempotency_key,
            run_id=str(message.run_id) if message.run_id else intake_run_id(message_id),
        )
        run_id = accepted.record.id
    except json.JSONDecodeError as problem:
        return _reject(body, message_id, "invalid_json", f"message body is not JSON: {problem}", None)
    except ValidationError as problem:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in problem.errors())
        return _reject(body, message_id, "validation_error", details, fields)
    except RunplaneError as problem:
        issues = "; ".join(f"{i.field}: {i.message}" for i in problem.issues)
        reason = f"{problem.message}{' (' + issues + ')' if issues else ''}"
        return _reject(body, message_id, problem.code, reason, fields)
    return run_id


def _reject(body: str, message_id: str, code: str, reason: str, fields: Any) -> None:
    code = _failed_run(fields, message_id, code, reason)
    logger.warning(
        "intake message rejected", extra={"message_id": message_id, "code": code, "reason": reason}
    )
    services().queues.reject_intake(body, message_id, code, reason)


def _failed_run(fields: Any, message_id: str, code: str, reason: str) -> str:
    """Store the rejection as a failed run where the producer will look (its `run_id`, else the id derived
    from the message id) when the message names a known account; the code the message is parked with."""
    fields = fields if isinstance(fields, dict) else {}
    account_id = fields.get("account_id")
    if not isinstance(account_id, str) or not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        return code
    if services().accounts.get(account_id) is None:
        return "account_not_found"
    try:
        run_id = str(uuid.UUID(fields["run_id"])) if fields.get("run_id") is not None else None
    except (TypeError, ValueError, AttributeError):
        return code  # no id the producer could poll
    runnable_id = fields.get("runnable_id")
    now = utcnow()
    outcome = fail_outcome(reason, code)
    services().runs.put_rejected(
        RunRecord(
            account_id=account_id,
            id=run_id or intake_run_id(message_id),
            runnable_id=runnable_id if isinstance(runnable_id, str) else "",
            runnable={},
            status=Status.failed,
            created_at=now,
            created_by=INTAKE_CREATOR,
            completed_at=now,
            failed_at=now,
            outcome_json=outcome.document(),
            expires_at=int((now + timedelta(days=services().settings.run_retention_days)).timestamp()),
            rejected=True,
        )
    )
    return code
