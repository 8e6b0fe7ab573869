"""Faults that last: one warning when an incident begins, one when it heals, a count between.

A transient fault (a full disk, a lock held elsewhere, a permission, a folder gone) is retried
with backoff until it goes away. Logging every attempt would flood the journal, and logging
nothing would hide it, so each kind of fault is an :class:`Incident`: ``failed()`` at every
failed attempt (the first one logs ``fault.begun`` at warning), ``healed()`` at the first
success after that (logs ``fault.healed`` at warning, with how many attempts failed and for
how long). ``Faults.active()`` lists what is failing now, for ``/healthz``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

__all__ = ["FAULT_BEGUN", "FAULT_HEALED", "Backoff", "Faults", "Incident"]

FAULT_BEGUN = "fault.begun"
FAULT_HEALED = "fault.healed"

log = structlog.get_logger()


@dataclass(slots=True)
class Incident:
    """One kind of fault (``name``, e.g. ``"outbox"``), open from its first failure to its heal.

    ``failures`` counts the failed attempts of the open incident (0: none is open),
    ``error`` is the latest one's message.
    """

    name: str
    failures: int = 0
    error: str = ""
    since: float = 0.0
    context: dict[str, object] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """Whether the fault is happening now."""
        return self.failures > 0

    def failed(self, error: str, **context: object) -> None:
        """An attempt failed; the first failure of an incident logs ``fault.begun``."""
        self.error = error
        self.failures += 1
        if self.failures == 1:
            self.since = time.monotonic()
            self.context = context
            log.warning(FAULT_BEGUN, fault=self.name, error=error, **context)

    def healed(self) -> None:
        """An attempt succeeded; ends an open incident with ``fault.healed``."""
        if not self.failures:
            return
        log.warning(
            FAULT_HEALED,
            fault=self.name,
            failures=self.failures,
            lasted=round(time.monotonic() - self.since, 3),
            error=self.error,
            **self.context,
        )
        self.failures = 0
        self.error = ""
        self.context = {}


class Faults:
    """The daemon's incidents by name; ``active()`` is what ``/healthz`` reports."""

    def __init__(self) -> None:
        self._incidents: dict[str, Incident] = {}

    def __getitem__(self, name: str) -> Incident:
        """The incident called ``name`` (created closed on first use)."""
        incident = self._incidents.get(name)
        if incident is None:
            incident = self._incidents[name] = Incident(name)
        return incident

    def active(self) -> dict[str, str]:
        """Open incidents: name -> latest error, with the count of failed attempts."""
        return {
            name: f"{incident.error} ({incident.failures} failed attempts)"
            for name, incident in self._incidents.items()
            if incident.open
        }


@dataclass(slots=True)
class Backoff:
    """Delays for retrying a fault: ``first_s`` doubling up to ``max_s``; ``reset()`` on success."""

    first_s: float = 0.1
    max_s: float = 5.0
    _next_s: float = 0.0

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = self._next_s or self.first_s
        self._next_s = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        """The fault is gone: the next incident starts from ``first_s`` again."""
        self._next_s = 0.0
