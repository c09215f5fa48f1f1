"""Child runs: what a python runnable asks its worker for through `ctx.run` (the runnable's own process
never calls AWS). A child's id follows from its parent's id and its place among the parent's children,
so a retried parent gets the children it already started back instead of starting them again."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from runplane.domain.errors import RunplaneError
from runplane.domain.ids import child_run_id
from runplane.domain.models import RunRecord, RunRequestFields
from runplane.logic.runs import create_run, get_run
from runplane.logic.services import services
from runplane.observability import logger


def answer(parent: RunRecord, question: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Answer `start_child` with the child's id and `get_run` with a RunState; errors as {"error"}."""
    try:
        if question == "start_child":
            return {"id": _start_child(parent, **payload)}
        if question == "get_run":
            return get_run(parent.account_id, payload["id"], consistent=True).model_dump(mode="json")
        return _error(f"unknown question {question!r}", "invalid_request")
    except RunplaneError as problem:
        return _error(f"child run: {problem.message}", problem.code)
    except ValidationError as problem:
        return _error(f"child run: {problem.errors(include_url=False)[0]['msg']}", "invalid_request")
    except Exception:  # an AWS error: it fails this ctx.run, not the worker
        logger.exception("child run request failed", extra={"run_id": parent.id, "question": question})
        return _error("child run: the request failed; try again", "child_run_failed")


def _start_child(
    parent: RunRecord,
    sequence: int,
    runnable_id: str,
    inputs: dict[str, Any],
    metadata: dict[str, Any],
    timeout_seconds: int | None,
) -> str:
    fields: dict[str, Any] = {"inputs": inputs, "metadata": metadata}
    if timeout_seconds is not None:
        fields["timeout_seconds"] = timeout_seconds
    request = RunRequestFields.model_validate(fields)
    # before the child exists, so cancelling the parent finds every child it may have
    services().runs.mark_parent(parent.account_id, parent.id, sequence)
    child = create_run(
        parent.account_id,
        runnable_id,
        request,
        created_by=parent.created_by,
        run_id=child_run_id(parent.id, sequence),
        parent_run_id=parent.id,
    )
    return child.id


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "code": code}}
