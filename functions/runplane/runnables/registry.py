"""Python runnables are functions registered by name; API callers can only name registered functions."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runplane.domain.models import ModelUsage

RunnableFunction = Callable[[dict[str, Any], "RunContext"], dict[str, Any]]

_registry: dict[str, RunnableFunction] = {}
_loaded: set[str] = set()
BUILTINS = "runplane.runnables.builtins"


class RunFailed(Exception):
    """Raise from a runnable to fail the run with a message and an error code of your choosing."""

    def __init__(self, message: str, code: str = "runnable_error"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class RunContext:
    """What a runnable knows about its run. `report_usage` records model usage for the run's totals."""

    run_id: str
    account_id: str
    runnable_id: str
    attempt: int
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    reporter: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    def report_usage(
        self,
        provider: str,
        model: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        usage = ModelUsage(
            provider=provider,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
        )
        if self.reporter is not None:
            self.reporter({"usage": usage.model_dump(), "cost_usd": cost_usd})


def runnable(name: str | None = None) -> Callable[[RunnableFunction], RunnableFunction]:
    """Register a function `(inputs, ctx) -> outputs` under `name` (default: the function's name)."""

    def register(function: RunnableFunction) -> RunnableFunction:
        key = name or function.__name__
        existing = _registry.get(key)
        if existing is not None and existing is not function:
            raise ValueError(f"a runnable named {key!r} is already registered by {existing.__module__}")
        _registry[key] = function
        return function

    return register


def load(packages: list[str]) -> None:
    """Import the built-ins and the deployer's packages (RUNPLANE_RUNNABLE_PACKAGES), once each."""
    for package in [BUILTINS, *packages]:
        if package not in _loaded:
            importlib.import_module(package)
            _loaded.add(package)


def lookup(name: str) -> RunnableFunction | None:
    return _registry.get(name)


def names() -> list[str]:
    return sorted(_registry)
