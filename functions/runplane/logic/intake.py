"""Runs from SQS producers: one intake message starts one run, however often it is delivered."""

from __future__ import annotations

import json

from pydantic import ValidationError

from runplane.domain.errors import RunplaneError
from runplane.domain.ids import intake_run_id
from runplane.domain.models import IntakeMessage
from runplane.logic.runs import start_run
from runplane.logic.services import services
from runplane.observability import logger

INTAKE_CREATOR = "intake"


def accept_intake(body: str, message_id: str) -> str | None:
    """Start the run a message asks for and return its id. A message that can never succeed is parked
    in the intake DLQ with the reason attached (and None returned) rather than retried."""
    try:
        message = IntakeMessage.model_validate(json.loads(body))
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
        return _reject(body, message_id, "invalid_json", f"message body is not JSON: {problem}")
    except ValidationError as problem:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in problem.errors())
        return _reject(body, message_id, "validation_error", details)
    except RunplaneError as problem:
        issues = "; ".join(f"{i.field}: {i.message}" for i in problem.issues)
        return _reject(
            body, message_id, problem.code, f"{problem.message}{' (' + issues + ')' if issues else ''}"
        )
    return run_id


def _reject(body: str, message_id: str, code: str, reason: str) -> None:
    logger.warning(
        "intake message rejected", extra={"message_id": message_id, "code": code, "reason": reason}
    )
    services().queues.reject_intake(body, message_id, code, reason)
