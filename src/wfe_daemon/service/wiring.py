"""Wiring: the registry, the services and the engine, built once from ``Settings``.

Every command and the daemon check the settings against the registry through
:func:`load_registry` (``run``, ``execute``, ``retry``, ``validate``, ``graph``, ``tasks``),
and whatever runs workflows (the daemon, ``execute``, ``retry``) builds its engine with
:func:`open_engine` over the store it opened (the daemon waits for a writable database,
under its signal watcher; the commands simply open it).
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wfe_daemon.config import Settings
from wfe_daemon.errors import ConfigError
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.secrets import SecretStore
from wfe_daemon.runtime.task import Services
from wfe_daemon.service.apitoken import TOKEN_NAME
from wfe_daemon.tasks import BUILTINS
from wfe_daemon.tasks.python import PythonTask

if TYPE_CHECKING:  # imported when used: ``validate`` and ``tasks`` need neither
    from wfe_daemon.cluster.executor import DaskExecutor
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.runtime.wrappers import AttemptFn, AttemptHook
    from wfe_daemon.store.database import Store

_OPT_IN: Final[Mapping[str, str]] = {"shell": "enable_shell", "python": "enable_python"}
"""Task types that run only when their setting is true, by type."""


def load_registry(settings: Settings) -> TaskRegistry:
    """Build the task registry and check ``settings`` against it.

    A type whose opt-in setting is false (``shell`` while ``enable_shell`` is false) stays
    listed but is refused: a workflow using it is rejected when validated, up front.

    Raises:
        ConfigError: ``[task_limits]`` or ``remote_types`` names a task type that no
            installed task has (a misspelt key would otherwise do nothing, silently), or
            the registry itself cannot be built.
    """
    registry = TaskRegistry.load(BUILTINS)
    registry.secrets = SecretStore(settings.secrets_dir, refused=_own_credentials(settings))
    for task_type, key in _OPT_IN.items():
        if not getattr(settings, key):
            registry.refuse(task_type, f"{task_type} is disabled: set {key} = true")
    if isinstance(python := registry.get("python"), PythonTask):
        python.modules = settings.python_modules  # a literal function is checked up front
    _check_types(registry, "task_limits", settings.task_limits)
    _check_types(registry, "remote_types", settings.remote_types)
    return registry


def _check_types(registry: TaskRegistry, key: str, types: Iterable[str]) -> None:
    """A ``ConfigError`` when setting ``key`` names a type no installed task has."""
    unknown = sorted(set(types) - {task.type for task in registry})
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        known = ", ".join(sorted(task.type for task in registry))
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"config: {key}: unknown task type{plural} {names} (known: {known})")


def _own_credentials(settings: Settings) -> list[Path]:
    """Where the daemon's own credentials (the API's bearer token, the ``[notify]``
    webhook's URL) may be: never a workflow's to read, whatever link leads to them. A
    relative file is read from ``$CREDENTIALS_DIRECTORY``, else the working directory
    (as the API and notifications read it), and is refused in ``secrets_dir`` too."""
    if settings.secrets_dir is None:
        return []
    base = Path(os.environ.get("CREDENTIALS_DIRECTORY") or os.getcwd())
    own = [p for p in (settings.api_token_file, settings.notify.url_file) if p]
    # An absolute path stays as it is under either folder.
    return [
        folder / path
        for folder in (settings.secrets_dir, base)
        for path in (Path(TOKEN_NAME), *own)
    ]


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Leave the objects made so far (modules, registry, clients, store) out of the
    garbage collector's full passes until the block ends (the daemon while it serves,
    ``execute`` and ``retry`` while they run).

    They live as long as the process, yet every full pass walked them all again: a
    10,000-node file set one off, and it took 20-30 ms where it now takes 2-3.
    """
    gc.collect()  # garbage made at start-up is freed now, not kept for good
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@asynccontextmanager
async def open_services(settings: Settings, *, lazy_http: bool = False) -> AsyncIterator[Services]:
    """Open what tasks reach through ``ctx.services`` and close it on exit.

    Today that is ``http``: the one pooled HTTP client of ``http_get``, opened now, or with
    ``lazy_http`` on the first request.
    """
    from wfe_daemon.tasks.http.task import http_client_on_demand, open_http_client

    if lazy_http:
        async with http_client_on_demand(settings) as open_http:
            yield Services(open_http=open_http)
        return
    async with open_http_client(settings) as http:
        yield Services(http=http)


@asynccontextmanager
async def open_engine(
    settings: Settings,
    registry: TaskRegistry,
    store: Store,
    *,
    executor: AttemptFn | None = None,
    hooks: tuple[AttemptHook, ...] = (),
    cluster: DaskExecutor | None = None,
    lazy_http: bool = False,
) -> AsyncIterator[Engine]:
    """The one engine of a process, over ``store``; the services it hands tasks are closed
    on exit.

    ``executor`` (default: the task's own ``execute``) and ``hooks`` are the engine's: the
    live progress line, metrics. The ``remote_types`` run on ``cluster`` when given
    (:func:`open_cluster`).

    ``lazy_http``: open the HTTP client on the first request rather than now (``execute``
    and ``retry``: a workflow without HTTP nodes never imports the HTTP libraries); the
    daemon opens it now, so that its first request does not wait for them.
    """
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.runtime.wrappers import call_task

    async with open_services(settings, lazy_http=lazy_http) as services:
        yield Engine(
            registry,
            store,
            settings,
            services=services,
            executor=executor or call_task,
            executors=cluster.attempts if cluster is not None else None,
            hooks=hooks,
        )


@asynccontextmanager
async def open_cluster(settings: Settings, *, daemon: bool) -> AsyncIterator[DaskExecutor | None]:
    """The Dask executor while the block runs when ``executor = "dask"``, else ``None``
    (and nothing of ``distributed`` is imported).

    ``daemon``: this is the daemon, whose attempt keys are the same across its lives: it
    cancels what an earlier life left on the workers. ``execute`` never does.
    """
    if settings.executor != "dask":
        yield None
        return
    from wfe_daemon.cluster.executor import DaskExecutor

    async with DaskExecutor(settings, clean_up=daemon).running() as cluster:
        yield cluster
