"""The built-in task types, one module per family.

Each public module here (``basic``, ``http``, ``csv``, ...) lists its task classes in a
``TASKS`` tuple; :data:`BUILTINS` gathers them in module-name order, for the code that
builds the registry (``TaskRegistry.load(BUILTINS)``). Modules import heavy libraries
(httpx, sqlite3...) inside ``execute``, so loading the registry stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil

from wfe_daemon.task import Task


def _discover() -> tuple[type[Task], ...]:
    found: list[type[Task]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.extend(getattr(module, "TASKS", ()))
    return tuple(found)


BUILTINS: tuple[type[Task], ...] = _discover()

__all__ = ["BUILTINS"]
