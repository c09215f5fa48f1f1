"""What runnable authors import: `@runnable`, `RunContext` and `RunFailed`."""

from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.registry import runnable

__all__ = ["RunContext", "RunFailed", "runnable"]
