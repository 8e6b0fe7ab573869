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
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.abc
import structlog
import watchfiles

from wfe_daemon.config import Settings
from wfe_daemon.core.records import StoreEvent
from wfe_daemon.core.schedule import ON_TIME, Catchup, Overlap, due_slots, next_slots
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
        self.firer = Firer(
            inbox=settings.inbox,
            registry=registry,
            store=store,
            handover=self.handover,
            leftovers=leftovers,
            crash=crash,
        )
        self.loaded: dict[str, ScheduleFile] = {}
        self._seen: dict[str, Signature] = {}
        """Every file looked at, valid or not (an invalid one is logged once per version)."""
        self._after: dict[str, datetime] = {}
        """Per schedule, the instant up to which its slots are decided."""
        self._next: dict[str, datetime] = {}
        self._running: dict[int, str] = {}
        """Runs of schedules still going: run id -> schedule."""
        self._queued: dict[str, deque[datetime]] = {}
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
            except (OSError, RuntimeError) as exc:  # the folder is gone: make it again
                self.faults["schedules"].failed(f"cannot watch {folder}: {exc}")
                with contextlib.suppress(OSError):
                    folder.mkdir(parents=True, exist_ok=True)
            await anyio.sleep(backoff.next())

    async def _rescan(self, *, at_start: bool = False) -> bool:
        """Load what changed in the folder; ``False`` when it could not be read (a fault:
        its schedules are kept meanwhile, and a folder gone is made again)."""
        folder = self.settings.schedules
        try:
            found = await anyio.to_thread.run_sync(scan_folder, folder)
        except OSError as exc:
            self.faults["schedules"].failed(
                f"cannot read {folder}: {describe_os_error(exc)}", schedules_dir=str(folder)
            )
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
            return False
        self.faults["schedules"].healed()
        for name in [name for name in self._seen if name not in found]:
            del self._seen[name]
            if self.loaded.pop(name, None) is not None:
                self._forget(name)
                await firings.forget_schedule(self.store, name)
                log.info("schedule.removed", schedule=name)
        changed = [
            (name, path, signature)
            for name, (path, signature) in sorted(found.items())
            if self._seen.get(name) != signature
        ]
        if not changed and not at_start:
            return True
        states = await firings.schedule_states(self.store)
        lasts = await firings.last_slots(self.store) if at_start else {}
        fresh: list[tuple[str, str, str]] = []
        for name, path, signature in changed:
            self._seen[name] = signature
            await self._load(name, path, states, lasts, fresh)
        if fresh:
            await firings.set_schedule_states(self.store, fresh)
        if at_start:
            for name in states.keys() - self.loaded.keys():
                await firings.forget_schedule(self.store, name)
        self._wake.set()
        return True

    async def _load(
        self,
        name: str,
        path: Path,
        states: dict[str, tuple[str, str]],
        lasts: dict[str, str],
        fresh: list[tuple[str, str, str]],
    ) -> None:
        """Load one file; a schedule whose slots count from now joins ``fresh``."""
        try:
            entry = await anyio.to_thread.run_sync(
                read_schedule, path, self.registry, self.cron, self.settings.max_file_size
            )
        except (WorkflowRejected, OSError) as exc:
            problems = exc.problems if isinstance(exc, WorkflowRejected) else [str(exc)]
            log.warning("schedule.invalid", schedule=name, path=str(path), errors=problems)
            if self.loaded.pop(name, None) is not None:
                self._forget(name)
                await firings.forget_schedule(self.store, name)
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
            fresh.append((name, fingerprint, slot_key(now)))
        last = lasts.get(name)
        if last is not None:
            since = max(since, datetime.fromisoformat(last))
        # No await from here: the loop never sees a schedule without its times.
        self.loaded[name] = entry
        self._after[name] = since
        self._next[name] = next_slots(entry.schedule, self.cron, since, 1)[0]
        log.info(
            "schedule.loaded" if before is None else "schedule.changed",
            schedule=name,
            rule=entry.schedule.describe(),
            paused=entry.schedule.paused,
            next=self._next[name].astimezone(entry.schedule.zone).isoformat(),
        )

    def _forget(self, name: str) -> None:
        for table in (self._after, self._next, self._queued):
            table.pop(name, None)

    # -- firing -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        backoff = Backoff(first_s=0.5, max_s=10.0)
        failing = False
        while True:
            self._wake = anyio.Event()
            try:
                await self._fire_due()
            except Exception as exc:
                failing = True  # a full disk, a database fault, a bug: never the daemon's end
                if isinstance(exc, OSError | StoreError):
                    self.faults["schedules"].failed(f"cannot fire slots: {exc}")
                else:
                    log.exception("schedule.error")
                await anyio.sleep(backoff.next())
                with contextlib.suppress(OSError, StoreError):
                    await self.firer.recover(self.loaded, hand=True)
                continue
            if failing:
                backoff.reset()
                self.faults["schedules"].healed()
                failing = False
            await self._wait()

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
        with contextlib.suppress(OSError):  # written when the slot comes, then
            await self.firer.stage(due)

    async def _fire_due(self) -> None:
        now = self.clock.now()
        due: list[_Due] = []
        skipped: list[_Skip] = []
        before: dict[str, tuple[datetime, datetime]] = {}
        for name, entry in self.loaded.items():
            if entry.schedule.paused or self._next[name] > now:
                continue
            before[name] = (self._after[name], self._next[name])
            slots = self._advance(entry, now)
            self._apply_overlap(entry, slots, due, skipped)
        due += self._release_queued()
        try:
            if skipped:
                await self._skip(skipped)
            if due:
                for fired in await self.firer.fire(due):
                    if fired.run_id is not None:
                        self._running[fired.run_id] = fired.schedule
        except BaseException:
            # Decide these slots again at the next try: those recorded already are not
            # fired twice (the unique index), the others are not lost.
            for name, (after, upcoming) in before.items():
                if name in self._after:
                    self._after[name], self._next[name] = after, upcoming
            raise

    def _advance(self, entry: ScheduleFile, now: datetime) -> list[datetime]:
        """The slots of ``entry`` due at ``now`` (by ``catchup``); moves its times past them."""
        name, schedule = entry.name, entry.schedule
        slot = self._next[name]
        following = next_slots(schedule, self.cron, slot, 1)[0]
        if following > now and (schedule.catchup is not Catchup.NONE or now - slot <= ON_TIME):
            slots, missed = [slot], 0  # the usual case: just the slot waited for
        else:
            slots, missed = due_slots(
                schedule, self.cron, self._after[name], now, self.settings.max_catchup
            )
            following = next_slots(schedule, self.cron, now, 1)[0]
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
        # queue, or skip with nothing running: caught-up slots run one after another
        queue = self._queued.setdefault(entry.name, deque())
        queue.extend(slots)
        while len(queue) > self.settings.max_catchup:
            skipped.append((entry, queue.popleft(), _FULL))

    def _release_queued(self) -> list[_Due]:
        """The first queued slot of each schedule with a queue and no run going."""
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
            log.info("schedule.skipped", schedule=entry.name, slot=slot_key(slot), reason=reason)
