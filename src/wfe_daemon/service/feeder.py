"""The handover's queue: submissions recorded in its tasks, then fed in order to the
daemon's workers (see :mod:`wfe_daemon.service.handover`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import structlog

from wfe_daemon.errors import WfeError
from wfe_daemon.service.intake import Claimed

__all__ = [
    "RECORD_TIMEOUT_S",
    "WAITING_PER_SLOT",
    "Accepted",
    "Handover",
    "NotTaken",
    "Undecided",
]

log = structlog.get_logger()

RECORD_TIMEOUT_S = 10.0
"""How long a submission waits for its run to be recorded before the client is answered
503 (the daemon goes on with it: see :class:`Undecided`)."""
WAITING_PER_SLOT = 1000
"""Submissions that may wait in the handover per workflow slot (``max_concurrent_workflows``;
the daemon has two workers a slot) before new ones are refused: the wait grows with the
backlog over the slots, so the bound does too. Each waiting one holds a path in memory and
a file in ``processing/`` (10,000 with the default 10 slots: a few MB); a burst of a few
seconds at the rate the API accepts (several hundred a second) fits, a flood that
outpaces the workers for minutes is told to come back later."""


class NotTaken(WfeError):
    """Raised when a submission cannot be taken now: the database is not taking writes,
    the daemon is stopping, or the run could not be recorded. Nothing is kept of it."""


class Undecided(WfeError):
    """Raised when a submission's run was not recorded within ``RECORD_TIMEOUT_S``: the
    daemon keeps trying, then runs the file once it is recorded, or removes it if the
    record fails (both logged)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A workflow recorded for the daemon to run: its run, and the file the workers take."""

    run_id: int
    status: str
    """``RUNNING``, or ``DUPLICATE`` (then ``duplicate_of`` names the run holding the key)."""
    claimed: Claimed
    duplicate_of: int | None = None
    retry_of: int | None = None


class Handover:
    """Passes accepted workflows to the daemon's workers, in order, without making the
    submitter wait for a free worker: :meth:`hand` queues in memory, and one :meth:`feed`
    task sends on to the workers' bounded queue. The API refuses new submissions while
    :meth:`full` (the queue is bounded by that check, made before anything is written).

    :meth:`settle` records a submission in a task of :meth:`feed`'s, so a record that
    outlasts its request (the database locked by another process) still ends: its file
    is handed to the workers once recorded, or removed when the record fails.

    What is still queued or being recorded when feeding stops (shutdown) stays in
    ``processing/``: the next start resumes a recorded run, and takes an unrecorded file
    as a new submission (as after a crash).
    """

    def __init__(self) -> None:
        self._waiting: deque[Claimed] = deque()
        self._recording = 0
        """Submissions whose file is written and whose run is being recorded."""
        self._wakes: set[anyio.Event] = set()
        """One per :meth:`settle` waiting: set when its record ends, or by :meth:`interrupt`."""
        self._interrupted = False
        self._recorded: anyio.Event | None = None
        """Set once no record is under way (waited for by :meth:`interrupt`)."""
        self._arrived: anyio.Event | None = None
        self._emptied: anyio.Event | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._closed = False

    @property
    def open(self) -> bool:
        """Whether :meth:`feed` runs (so a submission handed now is run)."""
        return self._tasks is not None and not self._closed

    @property
    def waiting(self) -> int:
        """Submissions being recorded, or handed and not yet taken by the workers' queue
        (each holds a file in ``processing/``; a slow database holds many)."""
        return len(self._waiting) + self._recording

    def full(self, slots: int) -> bool:
        """Whether :data:`WAITING_PER_SLOT` submissions per workflow slot already wait."""
        return self.waiting >= WAITING_PER_SLOT * slots

    def hand(self, claimed: Claimed, leftovers: set[Path]) -> None:
        """Queue ``claimed`` for the workers, as a leftover (in the daemon's ``leftovers``)."""
        if self._closed:
            return  # shutting down: the next start takes it from processing/
        leftovers.add(claimed.path)
        self._waiting.append(claimed)
        if self._arrived is not None:
            self._arrived.set()

    async def settle(
        self,
        record: Callable[[], Awaitable[Accepted]],
        leftovers: set[Path],
        *,
        what: str,
        timeout_s: float = RECORD_TIMEOUT_S,
    ) -> Accepted:
        """Run ``record`` in a task of the handover and hand its file to the workers; wait
        for it ``timeout_s`` at most.

        Raises:
            Undecided: it did not end in time; it goes on, and its outcome is logged.
            Exception: what ``record`` raised.
        """
        outcome: list[Accepted | Exception] = []
        ended, wake = anyio.Event(), anyio.Event()
        tasks = self._tasks
        if tasks is None or self._interrupted:
            raise NotTaken("the daemon is not taking submissions now (it is stopping)")
        tasks.start_soon(self._record, record, leftovers, what, outcome, (ended, wake))
        self._wakes.add(wake)
        try:
            with anyio.move_on_after(timeout_s):
                await wake.wait()
        finally:
            self._wakes.discard(wake)
        if not ended.is_set():
            outcome.append(Undecided(what))  # tells the task its caller is gone
            if self._interrupted:
                raise Undecided(f"{what} was not recorded before the daemon stopped")
            raise Undecided(f"{what} was not recorded within {timeout_s:g}s: the database is busy")
        if not outcome:  # cancelled: the daemon stops
            raise Undecided(f"{what} was interrupted: the daemon is stopping")
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    async def interrupt(self, grace_s: float) -> None:
        """At shutdown: let the records under way end for ``grace_s``, then answer the
        submissions still waiting for theirs at once (``Undecided``), so their clients hear
        "may still run" before the server closes their connections. Later ones are refused."""
        if self._recording:
            self._recorded = anyio.Event()
            with anyio.move_on_after(grace_s):
                await self._recorded.wait()
        self._interrupted = True
        for wake in list(self._wakes):
            wake.set()

    async def sent(self) -> None:
        """Return once the workers' queue has taken everything handed (or feeding stopped)."""
        if self._waiting and self.open:
            self._emptied = self._emptied or anyio.Event()
            await self._emptied.wait()

    def _wake_sent(self) -> None:
        if self._emptied is not None:
            self._emptied.set()
            self._emptied = None

    async def _record(
        self,
        record: Callable[[], Awaitable[Accepted]],
        leftovers: set[Path],
        what: str,
        outcome: list[Accepted | Exception],
        events: tuple[anyio.Event, anyio.Event],
    ) -> None:
        self._recording += 1
        try:
            accepted = await record()
        except Exception as exc:  # the caller gets it, or the log does
            if outcome:
                log.error("submission.failed", submission=what, error=str(exc))
            outcome.append(exc)
        else:
            self.hand(accepted.claimed, leftovers)
            if outcome:
                log.warning("submission.recorded_late", submission=what, run_id=accepted.run_id)
            outcome.append(accepted)
        finally:
            self._recording -= 1
            if not self._recording and self._recorded is not None:
                self._recorded.set()
            for event in events:  # ended, then the waiter's wake
                event.set()

    async def feed(
        self,
        queue: anyio.abc.ObjectSendStream[Claimed],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send what :meth:`hand` queues to ``queue`` until cancelled (or it closes);
        ``started`` once submissions can be settled."""
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                task_status.started()
                await self._send(queue)
                tasks.cancel_scope.cancel()  # intake closed the queue: shutdown
        finally:
            self._closed = True
            self._tasks = None
            self._wake_sent()

    async def _send(self, queue: anyio.abc.ObjectSendStream[Claimed]) -> None:
        try:
            while True:
                while self._waiting:
                    await queue.send(self._waiting[0])
                    self._waiting.popleft()
                self._wake_sent()
                self._arrived = anyio.Event()
                await self._arrived.wait()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # intake closed the workers' queue: shutdown
