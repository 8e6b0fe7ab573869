"""What a task type is and what it gets: the ``Task`` protocol, ``TaskContext``, ``Services``.

This is the contract between the engine and every task type, built-in or plugin, and the
module plugins reach through :mod:`wfe_daemon`. It imports only the standard library, the
exception tree and the engine's timer, so the registry, the engine and the task modules
all build on it without importing one another. ``TaskContext.path`` is the ``data_dir``
sandbox every path param goes through (:func:`data_path`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from wfe_daemon.errors import PathEscapeError
from wfe_daemon.runtime.deadlines import Deadlines, Scope

if TYPE_CHECKING:
    import httpx

    from wfe_daemon.config import Settings

__all__ = [
    "Output",
    "Params",
    "Services",
    "Task",
    "TaskContext",
    "being_cancelled",
    "data_path",
    "reserved_paths",
]

Params = Mapping[str, Any]
"""A node's params, references resolved, checked against the type's ``params_schema``."""
Output = Any
"""What ``execute`` returns: a JSON value (later nodes reference it)."""

DB_COMPANIONS = ("-wal", "-shm", "-journal", ".lock")
"""Suffixes of the files SQLite and the daemon keep beside the database."""


class Services:
    """Process-wide resources, opened once by the daemon (or ``execute``) for every task.

    A resource is given opened (``Services(http=client)``) or as the function that opens
    it on first use (``Services(open_http=...)``), so a process none of whose tasks needs
    it never pays for opening it. It is ``None`` when the process was built without it; a
    task that needs it fails saying so (``http_get`` without ``http``).
    """

    __slots__ = ("_http", "_open_http")
    _NAMES: ClassVar[frozenset[str]] = frozenset({"http"})

    def __init__(
        self,
        http: httpx.AsyncClient | None = None,
        *,
        open_http: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self._http = http
        self._open_http = open_http

    @property
    def http(self) -> httpx.AsyncClient | None:
        """The one pooled HTTP client of ``http_get`` (``tasks.http.task.open_http_client``)."""
        if self._http is None and self._open_http is not None:
            return self._open_http()  # it opens the client on its first call, then keeps it
        return self._http

    def open_now(self) -> None:
        """Open now what would be opened on first use. The engine calls it before the
        timeout of a task with ``uses_http = True`` starts: opening the client (importing
        the HTTP libraries, a quarter of a second or more) is not charged to that task."""
        if self._http is None and self._open_http is not None:
            self._http = self._open_http()

    def __getitem__(self, name: str) -> Any:
        """``ctx.services["http"]``, the mapping form plugins written before this class
        use; a resource this process was built without raises ``KeyError``."""
        value = getattr(self, name) if name in self._NAMES else None
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """``ctx.services.get("http")``: the mapping form, ``default`` when absent."""
        try:
            return self[name]
        except KeyError:
            return default


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a microsecond per attempt
class TaskContext:
    """What a running task may know and use besides its params (treat it as read-only)."""

    run_id: int
    workflow: str
    node_id: str
    attempt: int
    settings: Settings
    services: Services
    """Process-wide resources opened by the daemon (for example the shared HTTP client)."""
    deadlines: Deadlines = field(default_factory=Deadlines)
    """The engine's timer for attempt timeouts; use it through :meth:`timeout`."""
    attempt_timeout: float | None = None
    """This attempt's timeout in seconds, as the engine applies it (an executor that runs
    the attempt elsewhere enforces it there too)."""

    def timeout(self, seconds: float) -> Scope:
        """``with ctx.timeout(seconds):`` raises ``TimeoutError`` out of a block that takes
        longer, like ``async with asyncio.timeout(seconds):`` but on the engine's one timer."""
        return self.deadlines.scope(seconds)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def path(self, relative: str, *, param: str) -> Path:
        """The file ``relative`` names inside ``data_dir``: how every path param is read.

        Raises:
            PathEscapeError: ``relative`` is absolute, uses ``..``, leads out of
                ``data_dir`` through a symlink, or is the daemon's own database (or one
                of its ``-wal``, ``-shm``, ``-journal``, ``.lock`` files).
        """
        reserved = reserved_paths(self.settings.db_path)
        return data_path(self.data_dir, relative, param=param, reserved=reserved)

    @property
    def log(self) -> Any:
        """A logger bound to this run, node and attempt, for tasks that log."""
        import structlog  # here, not at the top: ``import wfe_daemon`` stays cheap

        return structlog.get_logger().bind(
            run_id=self.run_id,
            workflow=self.workflow,
            node_id=self.node_id,
            attempt=self.attempt,
        )


@runtime_checkable
class Task(Protocol):
    """A task type: metadata as class attributes and one ``execute`` coroutine.

    ``execute`` returns a JSON-serialisable output and raises to fail: raise
    ``TaskFailed("why")`` for an expected failure; any other exception fails the attempt
    too, with its type and message. Never catch cancellation. The engine applies the
    timeout, retries and the wrappers; a task does none of that itself.

    Optional: ``uses_http = True`` on a type whose ``execute`` reads ``ctx.services.http``,
    so that a client opened on first use is opened before the attempt's timeout starts.
    """

    type: ClassVar[str]
    display_name: ClassVar[str]
    description: ClassVar[str]
    category: ClassVar[str]
    params_schema: ClassVar[Mapping[str, Any]]
    default_timeout: ClassVar[float | None]
    """Seconds, or ``None`` to use ``task_timeout``."""

    async def execute(self, params: Params, ctx: TaskContext) -> Output: ...


def reserved_paths(db_path: Path) -> frozenset[Path]:
    """The resolved database file and its companions, which no task may touch."""
    db = db_path.resolve()
    return frozenset({db, *(db.with_name(db.name + suffix) for suffix in DB_COMPANIONS)})


def data_path(
    data_dir: Path, relative: str, *, param: str = "path", reserved: Collection[Path] = ()
) -> Path:
    """Resolve ``relative`` inside ``data_dir`` (symlinks followed) and check it stays there.

    The file need not exist (an output path); its parent folders are not created here.
    ``reserved`` holds resolved paths refused even inside ``data_dir`` (the daemon's
    database, see :func:`reserved_paths`).

    Raises:
        PathEscapeError: ``relative`` is empty, absolute, has a ``..`` component,
            resolves (through symlinks) outside ``data_dir``, or is reserved.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise PathEscapeError(f"{param}: must be a non-empty relative path, got {relative!r}")
    if "\x00" in relative:
        raise PathEscapeError(f"{param}: {relative!r} contains a NUL byte")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise PathEscapeError(f"{param}: {relative!r} is absolute; paths are relative to data_dir")
    if ".." in pure.parts:
        raise PathEscapeError(f"{param}: {relative!r} uses '..'; paths must stay in data_dir")
    root = data_dir.resolve()
    target = (root / pure).resolve()
    if target != root and not target.is_relative_to(root):
        raise PathEscapeError(f"{param}: {relative!r} leads out of data_dir through a symlink")
    if target in reserved:
        raise PathEscapeError(f"{param}: {relative!r} is the daemon's own database; refused")
    return target


def being_cancelled() -> bool:
    """Whether the running task has a cancel pending (a timeout, a cancel, shutdown),
    rather than a task raising ``CancelledError`` of its own accord."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
