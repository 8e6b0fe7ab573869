"""The scheduler: the schedule files of ``schedules_dir``, watched, each slot fired once.

Start (:meth:`Scheduler.prepare`, before the leftovers of ``processing/`` are fed to the
workers): read the folder, settle each schedule's starting point, finish the slots a
crash left recorded without a run (:mod:`wfe_daemon.service.firing`). Then
(:meth:`Scheduler.run`) it watches the folder (watchfiles, plus a rescan every 5 s:
:mod:`wfe_daemon.service.schedule_folder`) and fires what is due.

Where a schedule's slots count from: its latest slot recorded in the ``firing`` table, or
the instant its file (with this ``cron``/``every``/``timezone``/``paused``) was first
loaded, whichever is later (``schedule_state``). So a restart catches up what it missed
(by ``catchup``), and a new or changed schedule, or one unpaused, starts from now.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.abc
import structlog

from wfe_daemon.config import Settings
from wfe_daemon.core.records import StoreEvent
from wfe_daemon.core.schedule import ON_TIME, Catchup, Overlap, due_slots
from wfe_daemon.errors import StoreError
from wfe_daemon.faults import Backoff, Faults
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.clocks import Clock
from wfe_daemon.service.feeder import Handover
from wfe_daemon.service.firing import Firer, slot_key
from wfe_daemon.service.intake import Claimed, describe_os_error
from wfe_daemon.service.schedule_folder import ScheduleFolder
from wfe_daemon.service.schedules import ScheduleFile
from wfe_daemon.store import firings
from wfe_daemon.store.database import Store

__all__ = ["Scheduler"]

log = structlog.get_logger()

_STAGE_AHEAD = timedelta(seconds=0.5)
_Due = tuple[ScheduleFile, datetime]
_Skip = tuple[ScheduleFile, datetime, str]
_BUSY = "its previous run is still running (overlap: skip)"
_FULL = "more than max_catchup slots wait for the previous run"


class Scheduler(ScheduleFolder):
    """Fires the slots of the schedule files in ``settings.schedules`` (see the module)."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        store: Store,
        leftovers: set[Path],
        *,
        clock: Clock,
        crash: Callable[[str], None],
        faults: Faults,
    ) -> None:
        super().__init__(settings, registry, store, clock=clock, faults=faults)
        self.handover = Handover()
        self._running: dict[int, str] = {}
        """Runs of schedules still going: run id -> schedule (only RUNNING runs)."""
        self.firer = Firer(
            inbox=settings.inbox,
            registry=registry,
            store=store,
            handover=self.handover,
            leftovers=leftovers,
            crash=crash,
            running=self._running,
        )
        self._retry: tuple[list[_Due], list[_Skip]] | None = None
        """The slots a failed attempt decided: the next attempt fires (or skips) these."""
        self._unsettled = False
        """Firings may be left pending (a failed attempt): recovered before the next one."""
        self._staged_for: datetime | None = None

    # -- start ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load the folder, settle where each schedule counts from, recover pending slots."""
        self.store.watch(self.ended)
        await self._rescan(at_start=True)
        await self.firer.recover(self.loaded, hand=False, folder_read=self.folder_read)
        self._unsettled = not self.folder_read  # slots left pending: the loop settles them
        for firing in await firings.running_firings(self.store):
            if firing.run_id is not None:
                self._running[firing.run_id] = firing.schedule

    def ended(self, event: StoreEvent) -> None:
        """A transition the store committed (its watcher): a schedule's run may have ended."""
        if event.kind != "run" or event.data["status"] == "RUNNING":
            return
        if self._running.pop(event.data["run_id"], None) is not None:
            self._wake.set()

    async def run(
        self,
        send: anyio.abc.ObjectSendStream[Claimed],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch the folder and fire due slots into ``send`` (the workers' queue) until
        cancelled; ``started`` once both run."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.handover.feed, send)
            tg.start_soon(self._watch)
            task_status.started()
            await self._loop()

    # -- firing -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        backoff = Backoff(first_s=0.5, max_s=10.0)
        while True:
            self._wake = anyio.Event()
            try:
                if self._unsettled:  # before the retry: its slots recorded are not refired
                    await self.firer.recover(self.loaded, hand=True, folder_read=self.folder_read)
                    self._unsettled = not self.folder_read
                await self._fire_due()
            except Exception as exc:  # a full disk, a database fault, a bug: never the end
                self._unsettled = True
                self._report("firing", "cannot fire slots", exc)
                await anyio.sleep(backoff.next())
                continue
            if "firing" in self._failing:
                backoff.reset()
                self._healed("firing")
            await self._wait()

    def _report(self, source: str, what: str, exc: Exception) -> None:
        """A fault (a full disk, the database) as the ``schedules`` fault; a bug logged."""
        faults = _leaves(exc)
        if all(isinstance(leaf, OSError | StoreError) for leaf in faults):
            self._failed(source, f"{what}: {'; '.join(dict.fromkeys(map(_show, faults)))}")
        else:
            log.error("schedule.error", error=f"{what}: {_show(exc)}", exc_info=exc)

    async def _wait(self) -> None:
        """Wait for the next slot; half a second before it, stage its files (see ``firing``)."""
        active = [
            self._next[name] for name, entry in self.loaded.items() if not entry.schedule.paused
        ]
        until = min(active, default=None)
        if until is None:
            self._healed("staging")  # no slot to come: no file to write
        if until is None or until == self._staged_for:
            await self.clock.wait(until, self._wake)
            return
        if self.clock.now() < until - _STAGE_AHEAD:
            await self.clock.wait(until - _STAGE_AHEAD, self._wake)
            return
        due = [
            (entry, until)
            for name, entry in self.loaded.items()
            if not entry.schedule.paused and self._next[name] == until
        ]
        self._staged_for = until
        try:
            await self.firer.stage(due)
        except Exception as exc:  # written when the slot comes, then
            self._report("staging", "cannot write the files of the next slots", exc)
        else:
            self._healed("staging")

    async def _fire_due(self) -> None:
        if self._retry is not None:  # the slots decided before a fault, as they were
            due, skipped = self._retry
            await self._settle(
                [
                    (self.loaded[entry.name], slot)
                    for entry, slot in due
                    if entry.name in self.loaded
                ],
                [
                    (self.loaded[e.name], slot, why)
                    for e, slot, why in skipped
                    if e.name in self.loaded
                ],
            )
        now = self.clock.now()
        due = []
        skipped = []
        for name, entry in self.loaded.items():
            if entry.schedule.paused or self._next[name] > now:
                continue
            slots = self._advance(entry, now)
            self._apply_overlap(entry, slots, due, skipped)
        due += self._release_queued()
        await self._settle(due, skipped)

    async def _settle(self, due: list[_Due], skipped: list[_Skip]) -> None:
        """Skip then fire these slots; on a failure they are kept for the next attempt
        (those recorded already are not fired twice: the unique index)."""
        self._retry = (due, skipped)
        if skipped:
            await self._skip(skipped)
            self._retry = (due, [])
        if due:
            await self.firer.fire(due)
            self._healed("staging")  # their files were written
        self._retry = None

    def _advance(self, entry: ScheduleFile, now: datetime) -> list[datetime]:
        """The slots of ``entry`` due at ``now`` (by ``catchup``); moves its times past them."""
        name, schedule = entry.name, entry.schedule
        slot = self._next[name]
        following = self._following(entry, slot)
        if following > now and (schedule.catchup is not Catchup.NONE or now - slot <= ON_TIME):
            slots, missed = [slot], 0  # the usual case: just the slot waited for
        else:
            slots, missed = due_slots(
                schedule, self.cron, self._after[name], now, self.settings.max_catchup
            )
            following = self._following(entry, now)
        self._after[name] = now
        self._next[name] = following
        if missed:
            log.warning(
                "schedule.missed",
                schedule=name,
                missed=missed,
                catchup=schedule.catchup.value,
                firing=len(slots),
            )
        return slots

    def _busy(self, name: str) -> bool:
        return name in self._running.values()

    def _apply_overlap(
        self, entry: ScheduleFile, slots: list[datetime], due: list[_Due], skipped: list[_Skip]
    ) -> None:
        overlap = entry.schedule.overlap
        if overlap is Overlap.ALLOW:
            due += [(entry, slot) for slot in slots]
            return
        if overlap is Overlap.SKIP and slots and self._busy(entry.name):
            skipped += [(entry, slot, _BUSY) for slot in slots]
            return
        if slots:
            self._skips.pop(entry.name, None)
        # queue, or skip with nothing running: caught-up slots run one after another
        queue = self._queued.setdefault(entry.name, deque())
        queue.extend(slots)
        while len(queue) > self.settings.max_catchup:
            skipped.append((entry, queue.popleft(), _FULL))

    def _release_queued(self) -> list[_Due]:
        """The first queued slot of each schedule with a queue and no run going (kept for
        the next attempt when firing fails: see :meth:`_settle`)."""
        released: list[_Due] = []
        for name, queue in self._queued.items():
            if queue and not self._busy(name) and name in self.loaded:
                released.append((self.loaded[name], queue.popleft()))
        return released

    async def _skip(self, skipped: list[_Skip]) -> None:
        rows = [
            (entry.name, slot_key(slot), slot_key(self.clock.now()), firings.SKIPPED, None)
            for entry, slot, _ in skipped
        ]
        await firings.record_firings(self.store, rows)
        for entry, slot, reason in skipped:
            # One skip is the rule at work; more in a row: a run is stuck, or too slow.
            count = self._skips[entry.name] = self._skips.get(entry.name, 0) + 1
            (log.warning if count > 1 else log.info)(
                "schedule.skipped",
                schedule=entry.name,
                slot=slot_key(slot),
                reason=reason,
                in_a_row=count,
            )


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``: those of a task group's ``ExceptionGroup``, else it."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _show(exc: BaseException) -> str:
    return describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
