"""Process-wide resources, opened once by the commands that run workflows and the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

from wfe_daemon.config import Settings
from wfe_daemon.errors import ConfigError
from wfe_daemon.registry import TaskRegistry
from wfe_daemon.task import Services
from wfe_daemon.tasks import BUILTINS

_OPT_IN: Final[Mapping[str, str]] = {"shell": "enable_shell"}
"""Task types that run only when their setting is true, by type."""


def load_registry(settings: Settings) -> TaskRegistry:
    """Build the task registry and check ``settings`` against it.

    A type whose opt-in setting is false (``shell`` while ``enable_shell`` is false) stays
    listed but is refused: a workflow using it is rejected when validated, up front.

    Raises:
        ConfigError: ``[task_limits]`` names a task type that no installed task has
            (a misspelt key would otherwise limit nothing, silently), or the registry
            itself cannot be built.
    """
    registry = TaskRegistry.load(BUILTINS)
    for task_type, key in _OPT_IN.items():
        if not getattr(settings, key):
            registry.refuse(task_type, f"{task_type} is disabled: set {key} = true")
    unknown = sorted(set(settings.task_limits) - {task.type for task in registry})
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        known = ", ".join(sorted(task.type for task in registry))
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"config: task_limits: unknown task type{plural} {names} (known: {known})"
        )
    return registry


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open what tasks reach through ``ctx.services`` and close it on exit.

    Today that is ``http``: the one pooled HTTP client of ``http_get``.
    """
    from wfe_daemon.tasks.http import open_http_client

    async with open_http_client(settings) as http:
        yield Services(http=http)
