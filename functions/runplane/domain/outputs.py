"""A completed run's outputs against its runnable's `output_schema`."""

from __future__ import annotations

from runplane.domain.models import Outcome, RunError
from runplane.domain.states import ErrorCode, Status


def checked_outputs(outcome: Outcome, schema: dict | None) -> Outcome:
    """A completed run's outputs must match the runnable's output_schema, else the run fails."""
    if schema is None or outcome.status is not Status.completed:
        return outcome
    from jsonschema import Draft202012Validator

    problem = next(iter(Draft202012Validator(schema).iter_errors(outcome.outputs)), None)
    if problem is None:
        return outcome
    where = ".".join(["outputs", *map(str, problem.absolute_path)])
    error = RunError(
        message=f"outputs do not match the output_schema: {where}: {problem.message}",
        code=ErrorCode.invalid_output,
    )
    return outcome.model_copy(update={"status": Status.failed, "error": error})
