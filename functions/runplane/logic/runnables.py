"""Runnables: registration and lookup, scoped by account."""

from __future__ import annotations

from runplane.domain.agents import is_async
from runplane.domain.errors import Conflict, InvalidRequest, Issue, NotFound
from runplane.domain.ids import new_id
from runplane.domain.models import Page, Runnable, RunnableFields, utcnow
from runplane.logic import admission
from runplane.logic.services import services

RENAMED_MEANWHILE = 3  # attempts when a concurrent rename moves the runnable's name between read and write


def _validated(fields: RunnableFields) -> RunnableFields:
    """The fields with `config` checked by its kind and normalised; 400 naming what is wrong."""
    from pydantic import ValidationError

    from runplane.runnables.kinds import kind

    settings = services().settings
    module = kind(fields.kind)
    try:
        config = module.Config.model_validate(fields.config)
    except ValidationError as problem:
        raise InvalidRequest(
            f"config does not suit a {fields.kind} runnable",
            "validation_error",
            [
                Issue(".".join(["body.config", *map(str, p["loc"])]), p["msg"])
                for p in problem.errors(include_url=False)
            ],
        ) from None
    module.check(config, settings)
    for name in ("input_schema", "output_schema"):
        _check_schema(name, getattr(fields, name))
    normalised = config.model_dump(mode="json", exclude_none=True)
    if normalised.get("mode") == "async" and not settings.public_url:
        raise InvalidRequest(
            "this deployment cannot run async agents: it does not know its own URL (RUNPLANE_PUBLIC_URL), "
            "which agents report to",
            "async_unavailable",
            [Issue("body.config.mode", "async needs RUNPLANE_PUBLIC_URL")],
        )
    check_timeout(fields.timeout_seconds, {"kind": fields.kind, "config": normalised})
    return RunnableFields(**fields.model_dump(exclude={"config"}), config=normalised)


def check_timeout(seconds: int | None, runnable: dict) -> None:
    """400 when `seconds` is longer than the runnable's runs may last: a worker executes python, bedrock
    and sync runs (at most RUNPLANE_MAX_RUN_SECONDS), an async agent reports back (at most
    RUNPLANE_MAX_ASYNC_RUN_SECONDS)."""
    settings = services().settings
    limit = settings.max_async_run_seconds if is_async(runnable) else settings.max_run_seconds
    if seconds is None or seconds <= limit:
        return
    raise InvalidRequest(
        f"timeout_seconds may be at most {limit} for this runnable on this deployment: python and bedrock "
        f"runnables, and http and lambda ones in mode sync, run inside a worker (at most "
        f"{settings.max_run_seconds} s); http and lambda runnables in mode async may run up to "
        f"{settings.max_async_run_seconds} s",
        "timeout_too_long",
        [Issue("body.timeout_seconds", f"at most {limit}")],
    )


def _check_schema(name: str, schema: dict | None) -> None:
    if schema is None:
        return
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as problem:
        raise InvalidRequest(
            f"{name} is not a valid JSON Schema", f"invalid_{name}", [Issue(f"body.{name}", problem.message)]
        ) from None


def create_runnable(account_id: str, fields: RunnableFields, runnable_id: str | None = None) -> Runnable:
    """A new runnable; `runnable_id` chooses its id (the local stack's stable built-ins), else a new one.
    409 when the account has a runnable of that name."""
    fields = _validated(fields)
    now = utcnow()
    runnable = Runnable(
        **fields.model_dump(),
        id=runnable_id or new_id(),
        account_id=account_id,
        created_at=now,
        updated_at=now,
    )
    holder = services().runnables.create(runnable)
    if holder is not None:
        raise _name_taken(runnable.name, holder)
    return runnable


def get_runnable(account_id: str, runnable_id: str, *, consistent: bool = False) -> Runnable:
    runnable = services().runnables.get(account_id, runnable_id, consistent=consistent)
    if runnable is None:
        raise NotFound("Runnable", runnable_id)
    return runnable


def replace_runnable(account_id: str, runnable_id: str, fields: RunnableFields) -> Runnable:
    """Every field replaced; a new name is claimed (409 when another runnable holds it) and the old one
    freed."""
    fields = _validated(fields)
    for _ in range(RENAMED_MEANWHILE):
        current = get_runnable(account_id, runnable_id, consistent=True)
        runnable = Runnable(
            **fields.model_dump(),
            id=runnable_id,
            account_id=account_id,
            created_at=current.created_at,
            updated_at=utcnow(),
        )
        outcome = services().runnables.replace(runnable, current.name)
        if outcome != "gone":
            break
    if outcome is not None:
        raise NotFound("Runnable", runnable_id) if outcome == "gone" else _name_taken(runnable.name, outcome)
    admission.runnable_limit_changed(account_id, runnable_id)  # (also when a retry repeats a change)
    return runnable


def delete_runnable(account_id: str, runnable_id: str) -> None:
    """Runs already accepted keep going: each run holds a snapshot of its runnable (and is no longer
    held back by its max_concurrency). Its name is free again."""
    for _ in range(RENAMED_MEANWHILE):
        if services().runnables.delete(get_runnable(account_id, runnable_id, consistent=True)):
            break
    else:
        raise NotFound("Runnable", runnable_id)
    admission.runnable_limit_changed(account_id, runnable_id)


def _name_taken(name: str, holder: str) -> Conflict:
    if not holder:
        return Conflict(
            f"the name {name!r} is being taken by another request; try again", "runnable_name_busy"
        )
    return Conflict(
        f"this account has a runnable named {name!r} ({holder}): names are unique within an account; "
        f"choose another, or replace that one (PUT /v1/runnable/{holder})",
        "runnable_name_taken",
    )


def list_runnables(
    account_id: str, limit: int, cursor: str | None, name: str | None = None
) -> Page[Runnable]:
    """A page of the account's runnables, newest first; with `name`, the one so named (or none)."""
    if name is not None:
        found = services().runnables.find(account_id, name)
        return Page[Runnable](items=[found] if found else [], next_cursor=None)
    items, next_cursor = services().runnables.list(account_id, limit=limit, cursor=cursor)
    return Page[Runnable](items=items, next_cursor=next_cursor)
