"""What runnable authors import: `@runnable`, `RunContext` and `RunFailed`."""

from runplane.runnables.registry import RunContext, RunFailed, runnable

__all__ = ["RunContext", "RunFailed", "runnable"]
