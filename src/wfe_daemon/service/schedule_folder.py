"""The schedule files of ``schedules_dir`` as the scheduler holds them: loaded, watched
(watchfiles, plus a rescan every 5 s), each with the instant its slots are decided up to
and its next slot (see :mod:`wfe_daemon.service.scheduler`).

A fault (the folder gone or unreadable, the database failing) is the ``schedules`` fault;
a file not loaded for a database fault is loaded again at the next rescan, and where a new
schedule counts from is kept until the database has it.
"""

from __future__ import annotations

import contextlib
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import anyio
import structlog
import watchfiles

from wfe_daemon.config import Settings
from wfe_daemon.core.schedule import NeverFires, next_slots
from wfe_daemon.errors import StoreError, WorkflowRejected
from wfe_daemon.faults import Backoff, Faults
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.clocks import Clock
from wfe_daemon.service.cron import Cronsim
from wfe_daemon.service.firing import slot_key
from wfe_daemon.service.intake import describe_os_error
from wfe_daemon.service.schedules import ScheduleFile, Signature, read_schedule, scan_folder
from wfe_daemon.store import firings
from wfe_daemon.store.database import Store

__all__ = ["ScheduleFolder"]

log = structlog.get_logger()

_TICK_MS = 1000  # the watcher's thread returns this often: a shutdown waits for it
_RESCAN_TICKS = 5  # a rescan every 5 s finds what the watcher missed (a folder replaced)
_NEVER = datetime.max.replace(tzinfo=UTC)
"""The next slot of a schedule that has no more."""


class ScheduleFolder:
    """The schedules loaded from ``settings.schedules`` (see the module)."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        store: Store,
        *,
        clock: Clock,
        faults: Faults,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.clock = clock
        self.cron = Cronsim()
        self.faults = faults
        self.loaded: dict[str, ScheduleFile] = {}
        self._seen: dict[str, Signature] = {}
        """Every file looked at, valid or not (an invalid one is logged once per version)."""
        self.folder_read = False
        """Whether the last look at the folder could read it (else its schedules are kept
        as they were, and a slot is never judged lost for want of its file)."""
        self._invalid: dict[str, list[str]] = {}
        """The problems of each invalid file, read again at every rescan: a problem may
        lie outside the file (a secret not yet in ``secrets_dir``) and go away."""
        self._after: dict[str, datetime] = {}
        """Per schedule, the instant up to which its slots are decided."""
        self._next: dict[str, datetime] = {}
        self._queued: dict[str, deque[datetime]] = {}
        """Per schedule, slots waiting for its run to end (``overlap: queue``)."""
        self._unsaved: dict[str, tuple[str, str]] = {}
        """Where new schedules count from (fingerprint, since), until the database has it."""
        self._skips: dict[str, int] = {}
        """Per schedule, how many slots in a row ``overlap: skip`` skipped."""
        self._failing: set[str] = set()
        """What of the ``schedules`` fault is happening: ``"folder"``, ``"staging"``,
        ``"firing"``."""
        self._wake = anyio.Event()

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
            self.folder_read = False
            return False
        self.folder_read = True
        for name in [name for name in self._seen if name not in found]:
            await self._remove(name)
        changed = [
            (name, path, signature)
            for name, (path, signature) in sorted(found.items())
            if self._seen.get(name) != signature or name in self._invalid
        ]
        if changed or at_start:
            states = await firings.schedule_states(self.store)
            lasts = await firings.last_slots(self.store) if at_start else {}
            for name, path, signature in changed:
                if self._seen.get(name) != signature:
                    self._invalid.pop(name, None)  # a new version: its problems logged anew
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
        self._invalid.pop(name, None)

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
            problems = list(exc.problems) if isinstance(exc, WorkflowRejected) else [str(exc)]
            if name in self.loaded:
                await firings.forget_schedule(self.store, name)
                del self.loaded[name]
                self._forget(name)
            if self._invalid.get(name) != problems:  # once per version and set of problems
                log.warning("schedule.invalid", schedule=name, path=str(path), errors=problems)
            self._invalid[name] = problems
            return
        self._invalid.pop(name, None)
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

    def _following(self, entry: ScheduleFile, after: datetime) -> datetime:
        """The next slot of ``entry`` after ``after``; :data:`_NEVER` past its last one."""
        try:
            return next_slots(entry.schedule, self.cron, after, 1)[0]
        except NeverFires as exc:
            log.warning("schedule.invalid", schedule=entry.name, errors=[str(exc)])
            return _NEVER
