"""Runnables: registration and lookup, scoped by account."""

from __future__ import annotations

from runplane.domain.errors import InvalidRequest, Issue, NotFound
from runplane.domain.ids import new_id
from runplane.domain.models import Page, Runnable, RunnableFields, utcnow
from runplane.logic import admission
from runplane.logic.services import services


def _validate(fields: RunnableFields) -> None:
    from runplane.runnables import registry

    settings = services().settings
    registry.load(settings.runnable_packages)
    if registry.lookup(fields.config.function) is None:
        raise InvalidRequest(
            f"no python runnable named {fields.config.function!r} is registered",
            "unknown_function",
            [Issue("body.config.function", f"registered functions: {', '.join(registry.names())}")],
        )
    if fields.input_schema is not None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(fields.input_schema)
        except SchemaError as problem:
            raise InvalidRequest(
                "input_schema is not a valid JSON Schema",
                "invalid_input_schema",
                [Issue("body.input_schema", problem.message)],
            ) from None
    if fields.timeout_seconds is not None and fields.timeout_seconds > settings.max_run_seconds:
        raise InvalidRequest(
            f"timeout_seconds may be at most {settings.max_run_seconds} on this deployment",
            "timeout_too_long",
            [Issue("body.timeout_seconds", f"at most {settings.max_run_seconds}")],
        )


def create_runnable(account_id: str, fields: RunnableFields) -> Runnable:
    _validate(fields)
    now = utcnow()
    runnable = Runnable(
        **fields.model_dump(), id=new_id(), account_id=account_id, created_at=now, updated_at=now
    )
    services().runnables.put(runnable, new=True)
    return runnable


def get_runnable(account_id: str, runnable_id: str) -> Runnable:
    runnable = services().runnables.get(account_id, runnable_id)
    if runnable is None:
        raise NotFound("Runnable", runnable_id)
    return runnable


def replace_runnable(account_id: str, runnable_id: str, fields: RunnableFields) -> Runnable:
    current = get_runnable(account_id, runnable_id)
    _validate(fields)
    runnable = Runnable(
        **fields.model_dump(),
        id=runnable_id,
        account_id=account_id,
        created_at=current.created_at,
        updated_at=utcnow(),
    )
    if not services().runnables.put(runnable, new=False):
        raise NotFound("Runnable", runnable_id)
    admission.runnable_limit_changed(account_id, runnable_id)  # (also when a retry repeats a change)
    return runnable


def delete_runnable(account_id: str, runnable_id: str) -> None:
    """Runs already accepted keep going: each run holds a snapshot of its runnable (and is no longer
    held back by its max_concurrency)."""
    if not services().runnables.delete(account_id, runnable_id):
        raise NotFound("Runnable", runnable_id)
    admission.runnable_limit_changed(account_id, runnable_id)


def list_runnables(account_id: str, limit: int, cursor: str | None) -> Page[Runnable]:
    items, next_cursor = services().runnables.list(account_id, limit=limit, cursor=cursor)
    return Page[Runnable](items=items, next_cursor=next_cursor)
