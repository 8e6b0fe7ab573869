"""The one exception family of wfe-daemon.

Every error the project raises on purpose derives from :class:`WfeError`; library errors
are translated at the boundary with ``raise ... from exc``::

    WfeError
    ├── ConfigError          a setting is unknown, mistyped or out of range
    ├── WorkflowRejected     a workflow file is invalid; carries every problem found
    ├── TaskError            a node attempt failed (the engine decides retry or FAILED)
    │   ├── TaskFailed       the task ran and reported failure
    │   ├── TaskTimeout      the attempt exceeded its timeout
    │   ├── ParamsError      resolved params do not fit the task (bad reference, schema)
    │   └── PathEscapeError  a path param leads out of ``data_dir``
    ├── StoreError           the database is unusable or holds no such run
    │   └── StoreCorrupt     the database file is damaged (no retry heals it)
    ├── DuplicateRun         a run with the same idempotency key exists
    └── UsageError           a command line or command argument is wrong
"""

from __future__ import annotations

from collections.abc import Iterable


class WfeError(Exception):
    """Base of every error raised by wfe-daemon on purpose."""


class ConfigError(WfeError):
    """Raised when a configuration value is unknown, mistyped or out of range."""


class WorkflowRejected(WfeError):
    """Raised when a workflow file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class TaskError(WfeError):
    """Raised when a node attempt fails; the message is what the summary shows."""


class TaskFailed(TaskError):
    """Raised by a task when it ran and failed (bad status, invalid row, exit code...)."""


class TaskTimeout(TaskError):
    """Raised when an attempt runs past its timeout."""


class ParamsError(TaskError):
    """Raised when a node's resolved params do not fit its task type."""


class PathEscapeError(TaskError):
    """Raised when a path param is absolute, uses ``..`` or a symlink out of ``data_dir``."""


class StoreError(WfeError):
    """Raised when the database cannot be used, or holds no such run."""


class StoreCorrupt(StoreError):
    """Raised when the database file is damaged or not a database: a fault no retry heals."""


class DuplicateRun(WfeError):
    """Raised when a run with the same ``idempotency_key`` exists that has not failed."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"duplicate of run {run_id}")


class UsageError(WfeError):
    """Raised when a command is called with wrong arguments."""
