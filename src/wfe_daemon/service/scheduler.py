"""The scheduler: the schedule files of ``schedules_dir``, watched, each slot fired once.

Start (:meth:`Scheduler.prepare`, before the leftovers of ``processing/`` are fed to the
workers): read the folder, settle each schedule's starting point, finish the slots a
crash left recorded without a run (:mod:`wfe_daemon.service.firing`). Then
(:meth:`Scheduler.run`) it watches the folder (watchfiles, plus a rescan every 5 s) and
fires what is due.

Where a schedule's slots count from: its latest slot recorded in the ``firing`` table, or
the instant its file (with this ``cron``/``every``/``timezone``/``paused``) was first
loaded, whichever is later (``schedule_state``). So a restart catches up what it missed
(by ``catchup``), and a new or changed schedule, or one unpaused, starts from now.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.abc
import structlog
import watchfiles

from wfe_daemon.config import Settings
from wfe_daemon.core.records import StoreEvent
from wfe_daemon.core.schedule import (
    ON_TIME,
    Catchup,
    NeverFires,
    Overlap,
    due_slots,
    next_slots,
)
from wfe_daemon.errors import StoreError, WorkflowRejected
from wfe_daemon.faults import Backoff, Faults
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.clocks import Clock
from wfe_daemon.service.cron import Cronsim
from wfe_daemon.service.feeder import Handover
from wfe_daemon.service.firing import Firer, slot_key
from wfe_daemon.service.intake import Claimed, describe_os_error
from wfe_daemon.service.schedules import ScheduleFile, Signature, read_schedule, scan_folder
from wfe_daemon.store import firings
from wfe_daemon.store.database import Store

__all__ = ["Scheduler"]

log = structlog.get_logger()

_STAGE_AHEAD = timedelta(seconds=0.5)
_TICK_MS = 1000  # the watcher's thread returns this often: a shutdown waits for it
_RESCAN_TICKS = 5  # a rescan every 5 s finds what the watcher missed (a folder replaced)
_Due = tuple[ScheduleFile, datetime]
_Skip = tuple[ScheduleFile, datetime, str]
_BUSY = "its previous run is still running (overlap: skip)"
_FULL = "more than max_catchup slots wait for the previous run"
_NEVER = datetime.max.replace(tzinfo=UTC)
"""The next slot of a schedule that has no more."""


class Scheduler:
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
        self.settings = settings
        self.registry = registry
        self.store = store
        self.clock = clock
        self.cron = Cronsim()
        self.faults = faults
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
        self.loaded: dict[str, ScheduleFile] = {}
        self._seen: dict[str, Signature] = {}
        """Every file looked at, valid or not (an invalid one is logged once per version)."""
        self._after: dict[str, datetime] = {}
        """Per schedule, the instant up to which its slots are decided."""
        self._next: dict[str, datetime] = {}
        self._queued: dict[str, deque[datetime]] = {}
        self._unsaved: dict[str, tuple[str, str]] = {}
        """Where new schedules count from (fingerprint, since), until the database has it."""
        self._retry: tuple[list[_Due], list[_Skip]] | None = None
        """The slots a failed attempt decided: the next attempt fires (or skips) these."""
        self._unsettled = False
        """Firings may be left pending (a failed attempt): recovered before the next one."""
        self._skips: dict[str, int] = {}
        """Per schedule, how many slots in a row ``overlap: skip`` skipped."""
        self._failing: set[str] = set()
        """What of the ``schedules`` fault is happening: ``"folder"``, ``"staging"``,
        ``"firing"``."""
        self._wake = anyio.Event()
        self._staged_for: datetime | None = None

    # -- start ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load the folder, settle where each schedule counts from, recover pending slots."""
        self.store.watch(self.ended)
        await self._rescan(at_start=True)
        await self.firer.recover(self.loaded, hand=False)
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

    # -- the folder -------------------------------------------------------------------------

    async def _watch(self) -> None:
        folder = self.settings.schedules
        backoff = Backoff(first_s=0.5, max_s=10.0)
        while True:
            try:
                quiet = 0
                async for changes in watchfiles.awatch(
                    folder,
                    debounce=1000,
                    step=500,  # each look takes the GIL: an idle daemon looks twice a second
                    rust_timeout=_TICK_MS,
                    yield_on_timeout=True,
                    recursive=False,
                ):
                    quiet = 0 if changes else quiet + 1
                    if (changes or quiet % _RESCAN_TICKS == 0) and not await self._rescan():
                        break  # the folder was gone (and is made again): watch the new one
                    backoff.reset()
            except StoreError as exc:  # what changed is loaded again at the next try
                self._failed("folder", f"cannot load the schedules of {folder}: {exc}")
            except (OSError, RuntimeError) as exc:  # the folder is gone: make it again
                self._failed("folder", f"cannot watch {folder}: {exc}")
                with contextlib.suppress(OSError):
                    folder.mkdir(parents=True, exist_ok=True)
            await anyio.sleep(backoff.next())

    async def _rescan(self, *, at_start: bool = False) -> bool:
        """Load what changed in the folder; ``False`` when it could not be read (a fault:
        its schedules are kept meanwhile, and a folder gone is made again).

        Raises:
            StoreError: the database failed; a file not yet loaded is loaded again at
                the next rescan.
        """
        folder = self.settings.schedules
        try:
            found = await anyio.to_thread.run_sync(scan_folder, folder)
        except OSError as exc:
            self._failed(
                "folder",
                f"cannot read {folder}: {describe_os_error(exc)}",
                schedules_dir=str(folder),
            )
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
            return False
        for name in [name for name in self._seen if name not in found]:
            await self._remove(name)
        changed = [
            (name, path, signature)
            for name, (path, signature) in sorted(found.items())
            if self._seen.get(name) != signature
        ]
        if changed or at_start:
            states = await firings.schedule_states(self.store)
            lasts = await firings.last_slots(self.store) if at_start else {}
            for name, path, signature in changed:
                await self._load(name, path, states, lasts)
                self._seen[name] = signature
            if at_start:
                for name in states.keys() - self.loaded.keys():
                    await firings.forget_schedule(self.store, name)
            self._wake.set()
        await self._save_states()
        self._healed("folder")
        return True

    async def _remove(self, name: str) -> None:
        """A file gone: its schedule is no more (the database first: a fault keeps it)."""
        if name in self.loaded:
            await firings.forget_schedule(self.store, name)
            del self.loaded[name]
            self._forget(name)
            log.info("schedule.removed", schedule=name)
        del self._seen[name]

    async def _save_states(self) -> None:
        """Store where the schedules loaded count from (kept until the database has it)."""
        if not self._unsaved:
            return
        saved = dict(self._unsaved)
        await firings.set_schedule_states(
            self.store, [(name, *state) for name, state in saved.items()]
        )
        for name, state in saved.items():
            if self._unsaved.get(name) == state:
                del self._unsaved[name]

    async def _load(
        self,
        name: str,
        path: Path,
        states: dict[str, tuple[str, str]],
        lasts: dict[str, str],
    ) -> None:
        """Load one file; a schedule whose slots count from now is kept in ``_unsaved``
        until the database has it."""
        try:
            entry = await anyio.to_thread.run_sync(
                read_schedule, path, self.registry, self.cron, self.settings.max_file_size
            )
            next_slots(entry.schedule, self.cron, self.clock.now(), 1)
        except (WorkflowRejected, OSError, NeverFires) as exc:
            problems = exc.problems if isinstance(exc, WorkflowRejected) else [str(exc)]
            if name in self.loaded:
                await firings.forget_schedule(self.store, name)
                del self.loaded[name]
                self._forget(name)
            log.warning("schedule.invalid", schedule=name, path=str(path), errors=problems)
            return
        before = self.loaded.get(name)
        fingerprint = entry.schedule.fingerprint
        now = self.clock.now()
        state = states.get(name)
        if before is not None and before.schedule.fingerprint == fingerprint:
            since = self._after[name]  # only the workflow or the policies changed
        elif before is None and state is not None and state[0] == fingerprint:
            since = datetime.fromisoformat(state[1])  # as it was before the restart
        else:
            since = now
            self._unsaved[name] = (fingerprint, slot_key(now))
        last = lasts.get(name)
        if last is not None:
            since = max(since, datetime.fromisoformat(last))
        # No await from here: the loop never sees a schedule without its times.
        self.loaded[name] = entry
        self._after[name] = since
        self._next[name] = self._following(entry, since)
        log.info(
            "schedule.loaded" if before is None else "schedule.changed",
            schedule=name,
            rule=entry.schedule.describe(),
            paused=entry.schedule.paused,
            next=self._next[name].astimezone(entry.schedule.zone).isoformat(),
        )

    def _forget(self, name: str) -> None:
        for table in (self._after, self._next, self._queued, self._unsaved, self._skips):
            table.pop(name, None)

    def _failed(self, source: str, error: str, **context: object) -> None:
        """``source`` (``"folder"``, ``"staging"``, ``"firing"``) fails: the ``schedules``
        fault."""
        self._failing.add(source)
        self.faults["schedules"].failed(error, **context)

    def _healed(self, source: str) -> None:
        """``source`` works again: the fault heals once nothing of it fails."""
        self._failing.discard(source)
        if not self._failing:
            self.faults["schedules"].healed()

    # -- firing -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        backoff = Backoff(first_s=0.5, max_s=10.0)
        while True:
            self._wake = anyio.Event()
            try:
                if self._unsettled:  # before the retry: its slots recorded are not refired
                    await self.firer.recover(self.loaded, hand=True)
                    self._unsettled = False
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

    def _following(self, entry: ScheduleFile, after: datetime) -> datetime:
        """The next slot of ``entry`` after ``after``; :data:`_NEVER` past its last one."""
        try:
            return next_slots(entry.schedule, self.cron, after, 1)[0]
        except NeverFires as exc:
            log.warning("schedule.invalid", schedule=entry.name, errors=[str(exc)])
            return _NEVER

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
