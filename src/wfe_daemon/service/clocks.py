"""The wall clock the scheduler reads, and the crash points of firing.

:data:`CLOCK` is what the scheduler (and ``wfe-daemon schedules`` and ``trigger``) read
the time from, :data:`CRASH_AT` what firing calls at each named step (see
:mod:`wfe_daemon.service.firing`). In production they are :class:`SystemClock` and a
function that does nothing; nothing of the environment or the configuration changes them.
A program that embeds the daemon (the test suite's launcher) may replace them before it
calls :func:`wfe_daemon.cli.commands.main`, say with a clock it moves itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import anyio

__all__ = ["CLOCK", "CRASH_AT", "Clock", "SystemClock"]

_LONGEST_SLEEP_S = 30.0  # a wall clock stepped (NTP, a suspend) is noticed this soon


class Clock(Protocol):
    """What the scheduler reads the time from."""

    def now(self) -> datetime:
        """The current instant (aware, UTC)."""
        ...

    async def wait(self, until: datetime | None, wake: anyio.Event) -> None:
        """Return at ``until`` (``None``: no deadline), when ``wake`` is set, or earlier."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    async def wait(self, until: datetime | None, wake: anyio.Event) -> None:
        """Sleep until ``until``, at most 30 s at a time (the loop then looks again)."""
        delay = _LONGEST_SLEEP_S
        if until is not None:
            delay = min(delay, max(0.0, (until - self.now()).total_seconds()))
        with anyio.move_on_after(delay):
            await wake.wait()


def _nothing(point: str) -> None:
    return None


CLOCK: Clock = SystemClock()
"""The clock of the scheduler and of the schedule commands."""

CRASH_AT: Callable[[str], None] = _nothing
"""Called with the name of each step of firing as it is reached."""
