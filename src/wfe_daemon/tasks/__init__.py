"""The built-in task types, one module per family.

Each family's module (:data:`FAMILIES`) lists its task classes in a ``TASKS`` tuple;
:data:`BUILTINS` gathers them in that order, for the code that builds the registry
(``TaskRegistry.load(BUILTINS)``). Modules import heavy libraries (httpx, sqlite3...)
inside ``execute``, so loading the registry stays cheap.
"""

from __future__ import annotations

import importlib

from wfe_daemon.runtime.task import Task

FAMILIES = ("basic", "csv.tasks", "http.task", "http.post", "python", "shell", "sqlite")
"""The modules that define built-in task types, under this package, in listing order."""


def _gather() -> tuple[type[Task], ...]:
    found: list[type[Task]] = []
    for name in FAMILIES:
        found.extend(importlib.import_module(f"{__name__}.{name}").TASKS)
    return tuple(found)


BUILTINS: tuple[type[Task], ...] = _gather()

__all__ = ["BUILTINS", "FAMILIES"]
