"""wfe-daemon: a lightweight workflow engine that runs DAGs of tasks dropped into a folder.

The names exported here are the API for task types installed from other packages
(plugins, see the README's "Your own task types"); everything else is internal::

    from wfe_daemon import Output, Params, TaskContext, TaskFailed

- :class:`Task`: the protocol a task type satisfies (metadata and ``execute``).
- :class:`TaskContext`: what ``execute`` gets besides its params (``ctx.path``,
  ``ctx.timeout``, ``ctx.log``, ``ctx.services``).
- :class:`Services`: the process-wide resources in ``ctx.services``.
- ``Params`` and ``Output``: the types of ``execute``'s params and result.
- :class:`TaskFailed`: raise it to fail an attempt with a message.

Each name is imported on first use, so ``import wfe_daemon`` (which every command does)
stays as cheap as before: the task module imports asyncio.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing would triple this module's cost
if TYPE_CHECKING:
    from typing import Any, Final

    from wfe_daemon.errors import TaskFailed
    from wfe_daemon.runtime.task import Output, Params, Services, Task, TaskContext

__version__ = "0.1.0"

__all__ = ["Output", "Params", "Services", "Task", "TaskContext", "TaskFailed", "__version__"]

_HOMES: Final = {
    "Output": "wfe_daemon.runtime.task",
    "Params": "wfe_daemon.runtime.task",
    "Services": "wfe_daemon.runtime.task",
    "Task": "wfe_daemon.runtime.task",
    "TaskContext": "wfe_daemon.runtime.task",
    "TaskFailed": "wfe_daemon.errors",
}
"""The module that defines each exported name."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # here: the importlib package is not loaded yet at start-up

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
