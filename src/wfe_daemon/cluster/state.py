"""What the daemon knows of its Dask cluster now, for ``/healthz``, ``/metrics`` and logs.

Light on purpose (no ``distributed``): the HTTP server reads it whatever the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AttemptSeen = Callable[[str, str, bool], None]
"""Called after every remote attempt with ``(task_type, worker, succeeded)`` (metrics);
``worker`` is empty when the attempt never reached one."""


@dataclass(slots=True)
class ClusterState:
    """The cluster as the executor last saw it: plain attributes, swapped on the loop and
    read from the HTTP thread."""

    scheduler: str
    connected: bool = False
    workers: int = 0
    """Workers ready for attempts (same version, preloaded)."""
    running: int = 0
    """Attempts sent and not yet ended."""
    problem: str | None = "not connected yet"
    """Why remote attempts cannot run now (``None`` while connected and well)."""
    on_attempt: list[AttemptSeen] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The ``cluster`` object of ``/healthz``."""
        return {
            "executor": "dask",
            "scheduler": self.scheduler,
            "connected": self.connected,
            "workers": self.workers,
            "last_error": self.problem,
        }


__all__ = ["AttemptSeen", "ClusterState"]
