"""The `python` kind: a function registered with `@runnable`, named by `config.function`."""

from __future__ import annotations

from typing import Any

from runplane.domain.configs import PythonConfig
from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.states import ErrorCode
from runplane.runnables import registry
from runplane.runnables.context import RunContext, RunFailed
from runplane.settings import Settings

ISOLATED = True


Config = PythonConfig


def check(config: Config, settings: Settings) -> None:
    registry.load(settings.runnable_packages)
    if registry.lookup(config.function) is None:
        raise InvalidRequest(
            f"no python runnable named {config.function!r} is registered",
            "unknown_function",
            [Issue("body.config.function", f"registered functions: {', '.join(registry.names())}")],
        )


def invoke(config: Config, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    function = registry.lookup(config.function)
    if function is None:
        raise RunFailed(
            f"python runnable {config.function!r} is not registered in this worker",
            ErrorCode.runnable_unavailable,
        )
    return function(inputs, ctx)
