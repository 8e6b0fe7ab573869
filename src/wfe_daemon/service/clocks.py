"""The wall clock the scheduler reads, and the test aids that stand in for it.

In production the clock is :class:`SystemClock`. Two test aids exist for the test suite,
honoured only when the environment holds ``WFE_TEST_HOOKS=1`` (never set by the service
unit or the configuration):

- ``WFE_TEST_CLOCK_FILE=PATH``: the scheduler's (and ``wfe-daemon schedules``') time is
  the ISO 8601 instant written in that file, re-read every 20 ms, so a test moves time
  by writing it instead of sleeping (:class:`FileClock`).
- ``WFE_TEST_CRASH_AT=POINT``: the process kills itself with SIGKILL on reaching the
  named point of the scheduler (see :func:`crash_point`), to test recovery.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import anyio

__all__ = ["Clock", "FileClock", "SystemClock", "clock_for", "crash_point"]

TEST_SWITCH = "WFE_TEST_HOOKS"
_LONGEST_SLEEP_S = 30.0  # a wall clock stepped (NTP, a suspend) is noticed this soon
_FILE_POLL_S = 0.02


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


class FileClock:
    """A test aid: the time is the instant written in ``path`` (see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        """The instant in the file (UTC when it has no offset)."""
        stamp = datetime.fromisoformat(self.path.read_text().strip())
        return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)

    async def wait(self, until: datetime | None, wake: anyio.Event) -> None:
        """Return within 20 ms: the file is read again then."""
        with anyio.move_on_after(_FILE_POLL_S):
            await wake.wait()


def _hooks_on(environ: Mapping[str, str]) -> bool:
    return environ.get(TEST_SWITCH) == "1"


def clock_for(environ: Mapping[str, str]) -> Clock:
    """The system clock, or a test's :class:`FileClock` (see the module)."""
    path = environ.get("WFE_TEST_CLOCK_FILE")
    if _hooks_on(environ) and path:
        return FileClock(Path(path))
    return SystemClock()


def crash_point(environ: Mapping[str, str]) -> Callable[[str], None]:
    """A function to call at each named point; it kills the process at the test's one."""
    point = environ.get("WFE_TEST_CRASH_AT") if _hooks_on(environ) else None
    if not point:
        return _nothing

    def reached(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    return reached


def _nothing(name: str) -> None:
    return None
