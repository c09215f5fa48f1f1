"""Local mode's code reload: a local worker re-imports the runnable packages (RUNPLANE_RUNNABLE_PACKAGES)
before a run when one of their source files changed, so that the run, forked from the worker, runs the
new code (a forked process imports nothing again). Deployed workers import them once."""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from types import ModuleType

from runplane.local.terminal import say
from runplane.runnables import registry

# Files are stamped by a coarser clock than time.time_ns(): a file changed this long before a check is
# seen by the next check too (at worst, one reload more).
CLOCK_MARGIN_NS = 1_000_000_000


class Reloader:
    def __init__(self, packages: list[str]):
        self.packages = packages
        self.files: set[str] = set()  # of the packages' modules (kept while an import of theirs fails)
        self.checked = time.time_ns() - CLOCK_MARGIN_NS
        # a .pyc is taken for its source when they agree in size and mtime in whole seconds: one written
        # here could hide an edit made in the same second
        sys.dont_write_bytecode = True

    def __call__(self) -> None:
        """Re-import the packages if a file of theirs changed since the last call."""
        now = time.time_ns() - CLOCK_MARGIN_NS
        self.files |= {module.__file__ for module in self._modules().values() if module.__file__}
        if any(_mtime(file) > self.checked for file in self.files):
            self._reload()
        self.checked = now

    def _modules(self) -> dict[str, ModuleType]:
        def ours(name: str) -> bool:
            return any(name == p or name.startswith(p + ".") for p in self.packages)

        return {name: module for name, module in list(sys.modules.items()) if ours(name)}

    def _reload(self) -> None:
        """Forget the packages' modules and the functions they registered, then import them again. If that
        fails, the terminal shows why, and their runs fail as runnable_unavailable until the next change."""
        modules = self._modules()
        for name in modules:
            del sys.modules[name]
        for key, function in list(registry._registry.items()):
            if function.__module__ in modules:
                del registry._registry[key]
        importlib.invalidate_caches()  # new files too
        for package in self.packages:
            try:
                importlib.import_module(package)
            except Exception as error:
                say(f"[worker] cannot reload {package}:\n{_their_traceback(error)}", sys.stderr)


def _their_traceback(error: Exception) -> str:
    """The traceback without the frames of the import machinery and of this module."""
    shown = traceback.TracebackException.from_exception(error)
    theirs = [
        f for f in shown.stack if not f.filename.startswith(("<frozen", importlib.__path__[0], __file__))
    ]
    shown.stack = traceback.StackSummary.from_list(theirs)
    return "".join(shown.format()).rstrip()


def _mtime(file: str) -> int:
    try:
        return os.stat(file).st_mtime_ns
    except OSError:  # deleted
        return 0
