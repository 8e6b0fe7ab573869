"""``wfe-daemon`` for the test suite: the command line with the scheduler's test aids.

Run as ``python tests/hooked_wfe.py ARGS...`` (what ``python -m wfe_daemon ARGS...`` does),
it first installs, from its own environment:

- ``WFE_TEST_CLOCK_FILE=PATH``: the scheduler's (and ``schedules``' and ``trigger``'s) time
  is the ISO 8601 instant written in that file, read again every 20 ms, so a test moves
  time by writing it instead of sleeping (:class:`FileClock`);
- ``WFE_TEST_CRASH_AT=POINT``: the process kills itself with SIGKILL on reaching the named
  step of firing (``schedule.recorded``, ``schedule.written``, ``schedule.run_recorded``).

The daemon itself reads neither: these go through the seams of
:mod:`wfe_daemon.service.clocks`.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio

from wfe_daemon.cli.commands import main
from wfe_daemon.service import clocks

HERE = Path(__file__).resolve()
"""This file: ``[sys.executable, str(HERE), ...]`` runs the command line with the aids."""

_FILE_POLL_S = 0.02


class FileClock:
    """The time is the instant written in ``path`` (UTC when it has no offset)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        """The instant in the file."""
        stamp = datetime.fromisoformat(self.path.read_text().strip())
        return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)

    async def wait(self, until: datetime | None, wake: anyio.Event) -> None:
        """Return within 20 ms: the file is read again then."""
        with anyio.move_on_after(_FILE_POLL_S):
            await wake.wait()


def _crash_at(point: str) -> None:
    def reached(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    clocks.CRASH_AT = reached


def install(environ: dict[str, str]) -> None:
    """Install the aids that ``environ`` asks for."""
    if path := environ.get("WFE_TEST_CLOCK_FILE"):
        clocks.CLOCK = FileClock(Path(path))
    if point := environ.get("WFE_TEST_CRASH_AT"):
        _crash_at(point)


if __name__ == "__main__":
    install(dict(os.environ))
    raise SystemExit(main(sys.argv[1:]))
