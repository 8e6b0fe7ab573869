"""Per-attempt deadlines on one timer: starting and ending an attempt touches no timer.

``asyncio.timeout`` arms and cancels a loop timer for every attempt, a sixth of the engine's
time per node on a fan-out of ``echo`` nodes (``benchmarks/RESULTS.md``). Here attempts with
the same timeout share a queue: their deadlines come in the order they started, so the
earliest is always at the head, and one loop timer is armed for the earliest head of all
queues. When it fires, it cancels the attempts past their deadline, drops the ended ones,
and is armed again for the next. An attempt that ends marks its entry and drops the
ended entries at the head of its queue; a queue whose ended entries outnumber the running
ones behind a slow attempt is rebuilt, so it holds about twice the attempts running.

Cancelling follows ``asyncio.timeout``: the attempt's task is cancelled, and the
``CancelledError`` counts as this timeout only if nothing else asked to cancel the task
meanwhile (:meth:`Deadlines.end`). :meth:`Deadlines.scope` wraps that as a context
manager that raises ``TimeoutError``, the way the engine and tasks (``ctx.timeout``) use it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Final

_LATE_S: Final = 0.001
"""The timer is armed this much after the deadline: uvloop keeps millisecond time and may
fire up to that much before the time asked, and a deadline must never pass early."""
_COMPACT_AT: Final = 64
"""Ended entries a queue may hold behind a running one before it is rebuilt."""


class _Queue:
    """The deadlines of one timeout value, in the order they started (so of their ends)."""

    __slots__ = ("ended", "entries")

    def __init__(self) -> None:
        self.entries: deque[Deadline] = deque()
        self.ended = 0
        """Entries still in ``entries`` whose attempt has ended."""


@dataclass(slots=True, eq=False)
class Deadline:
    """One attempt's deadline, from :meth:`Deadlines.start` to :meth:`Deadlines.end`."""

    when: float
    task: asyncio.Task[object] | None
    """The attempt's task; ``None`` once the attempt has ended."""
    cancelling: int
    """``task.cancelling()`` at the start: cancel requests that were not this timeout's."""
    queue: _Queue | None
    """The queue holding this entry; ``None`` once taken out of it."""
    expired: bool = False


class Deadlines:
    """The deadlines of the attempts running on one event loop (one per engine)."""

    def __init__(self) -> None:
        self._queues: dict[float, _Queue] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def scope(self, seconds: float) -> Scope:
        """``with deadlines.scope(seconds):`` as ``async with asyncio.timeout(seconds):``."""
        return Scope(self, seconds)

    def start(self, timeout: float) -> Deadline:
        """The current task must finish within ``timeout`` seconds from now, or be cancelled."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "Deadlines.start outside a task"
        if loop is not self._loop:  # a new loop: what the old one held died with it
            self._queues.clear()
            self._timer, self._loop = None, loop
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = _Queue()
        deadline = Deadline(loop.time() + timeout, task, task.cancelling(), queue)
        queue.entries.append(deadline)
        if self._timer is None or deadline.when < self._timer.when():
            self._arm(loop, deadline.when)
        return deadline

    def end(self, deadline: Deadline) -> bool:
        """The attempt is over; whether a ``CancelledError`` it raised is this timeout's.

        Call it once, as soon as the attempt returns or raises. The timer is left armed:
        it fires at most once more, finds nothing to do, and stops.
        """
        task, deadline.task = deadline.task, None
        queue = deadline.queue
        if queue is not None:
            queue.ended += 1
            _drop_ended(queue)
        if not deadline.expired or task is None:
            return False
        # Balance this timeout's cancel request; any other request means a real cancel.
        return task.uncancel() <= deadline.cancelling

    def remaining(self) -> float | None:
        """Seconds left before the current task's nearest deadline; ``None`` without one.

        For work that must end by the deadline on its own terms rather than be cancelled
        at it (the ``shell`` task warns its process group before killing it).
        """
        task = asyncio.current_task()
        if task is None or self._loop is not asyncio.get_running_loop():
            return None
        whens = [d.when for q in self._queues.values() for d in q.entries if d.task is task]
        return min(whens) - self._loop.time() if whens else None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when + _LATE_S, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        earliest: float | None = None
        for timeout, queue in list(self._queues.items()):
            entries = queue.entries
            while entries and (entries[0].task is None or entries[0].when <= now):
                deadline = entries.popleft()
                deadline.queue = None
                if deadline.task is None:
                    queue.ended -= 1
                else:
                    deadline.expired = True
                    deadline.task.cancel()
            if not entries:
                del self._queues[timeout]
            elif earliest is None or entries[0].when < earliest:
                earliest = entries[0].when
        if earliest is not None:
            self._arm(loop, earliest)


def _drop_ended(queue: _Queue) -> None:
    """Drop ended entries from the head; rebuild when too many wait behind a running one."""
    entries = queue.entries
    while entries and entries[0].task is None:
        entries.popleft().queue = None
        queue.ended -= 1
    if queue.ended > _COMPACT_AT and 2 * queue.ended > len(entries):
        for deadline in entries:
            if deadline.task is None:
                deadline.queue = None
        queue.entries = deque(d for d in entries if d.task is not None)
        queue.ended = 0


class Scope:
    """Raises ``TimeoutError`` out of its block when the block outlives its deadline."""

    __slots__ = ("_deadline", "_deadlines", "_seconds")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self._deadline: Deadline | None = None

    @property
    def expired(self) -> bool:
        """Whether the deadline passed while the block ran (and cancelled it)."""
        return self._deadline is not None and self._deadline.expired

    def __enter__(self) -> Scope:
        self._deadline = self._deadlines.start(self._seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._deadline is not None
        if self._deadlines.end(self._deadline) and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
