"""Python runnables are functions registered by name; API callers can only name registered functions."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from runplane.runnables.context import RunContext

RunnableFunction = Callable[[dict[str, Any], RunContext], dict[str, Any]]

_registry: dict[str, RunnableFunction] = {}
_loaded: set[str] = set()
BUILTINS = "runplane.runnables.builtins"


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
