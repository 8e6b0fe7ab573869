"""Firing slots: each slot recorded once, then its file written, then its run recorded.

A scheduled run takes the path of a workflow handed over by the API
(:mod:`wfe_daemon.service.handover`): its document is written durably into
``inbox/processing/<hex>/<name>.<slot>.json``, its run recorded RUNNING with that
``source_path``, then the file goes to the workers as a leftover. Before any of that, the
slot is recorded ``pending`` in the ``firing`` table, with the path its file will take,
under the unique index on (schedule, slot), durably. The order, and what a kill at each
point leaves for the next start (:meth:`Firer.recover`, run before the leftovers of
``processing/`` are fed to the workers):

1. the firing row is committed (a slot already recorded is not fired again: that is
   "exactly once"); a kill before it leaves nothing, and ``catchup`` decides the slot;
2. the file appears: it was written (and fsynced) into a staging dot-folder
   ``processing/.slot-<hex>/``, half a second ahead of the slot (:meth:`Firer.stage`) or
   now, and that folder is renamed ``processing/<hex>/`` (and ``processing/`` fsynced); a
   kill before it leaves a pending firing without a file (the staging folder is removed
   at start): the file is made again from the schedule file as it is then (the slot is
   lost, and logged, only when that file is gone or invalid);
3. the run is recorded (durably) and the firing marked ``fired`` with its id; a kill
   before that leaves a pending firing with its file, and maybe its run (found by its
   ``source_path``): the run is recorded now if missing, the firing linked;
4. the file is handed to the workers as soon as its firing is linked, each run on its own
   (a fault recording one run holds up no other); after a kill it is a leftover of
   ``processing/``, resumed as an API submission is.

The first steps happen once per batch of slots due together: one transaction for the
firing rows, one folder renamed; the runs' writes share the writer's batches. Writing the
files ahead keeps their fsyncs out of the time between a slot and its run. A slot whose
firing stays pending (a fault between the steps) is finished by :meth:`Firer.recover`,
which the scheduler runs again until none is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.core.model import WorkflowDef, parse_workflow, public_definition
from wfe_daemon.core.strictjson import load_json
from wfe_daemon.errors import DuplicateRun, WorkflowRejected
from wfe_daemon.logs import WORKFLOW_RECEIVED
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.feeder import Handover
from wfe_daemon.service.intake import PROCESSING, Claimed
from wfe_daemon.service.schedules import ScheduleFile, slot_document, slot_stem
from wfe_daemon.service.slotfiles import (
    STAGING,
    Named,
    place,
    read_slot_file,
    remove_staging,
    write_all,
    write_files,
)
from wfe_daemon.service.submission import record_duplicate
from wfe_daemon.store import firings
from wfe_daemon.store.database import Store

__all__ = ["VIA_SCHEDULE", "Fired", "Firer", "slot_key"]

log = structlog.get_logger()

VIA_SCHEDULE = "schedule"


def slot_key(slot: datetime) -> str:
    """A slot as the ``firing`` table keeps it: UTC ISO 8601, whole seconds."""
    return slot.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class _Staged:
    """Slot files written ahead into a staging ``folder``, by ``(schedule, slot)``."""

    folder: Path
    files: dict[tuple[str, datetime], tuple[ScheduleFile, Named]]


def _slot_file(entry: ScheduleFile, slot: datetime) -> Named:
    name = f"{slot_stem(entry.name, slot, entry.schedule)}.json"
    return name, slot_document(entry.document, slot, entry.schedule)


@dataclass(frozen=True, slots=True)
class Fired:
    """A slot that fired: its run (``None`` when it could not be run: logged), and whether
    that run is RUNNING (not a DUPLICATE)."""

    schedule: str
    slot: datetime
    run_id: int | None
    running: bool = False


class Firer:
    """Fires batches of slots (see the module) into ``handover``, for the daemon's workers."""

    def __init__(
        self,
        *,
        inbox: Path,
        registry: TaskRegistry,
        store: Store,
        handover: Handover,
        leftovers: set[Path],
        crash: Callable[[str], None],
        running: dict[int, str],
    ) -> None:
        self.inbox = inbox
        self.registry = registry
        self.store = store
        self.handover = handover
        self.leftovers = leftovers
        self.crash = crash
        self.running = running
        """Runs of schedules going on (run id -> schedule): a run enters before it is
        handed to the workers, so its end is never missed."""
        self._staged: _Staged | None = None

    async def stage(self, slots: list[tuple[ScheduleFile, datetime]]) -> None:
        """Write the files of slots about to be due ahead of time, into a dot-folder of
        ``processing/`` that no one reads (the next start removes it): :meth:`fire` then
        has only to record them and rename the folder into place."""
        self._unstage()
        folder = self.inbox / PROCESSING / f"{STAGING}{uuid.uuid4().hex[:12]}"
        files = {(entry.name, slot): (entry, _slot_file(entry, slot)) for entry, slot in slots}
        await write_all(folder, [named for _, named in files.values()])
        self._staged = _Staged(folder, files)

    def _unstage(self) -> None:
        if self._staged is not None:
            shutil.rmtree(self._staged.folder, ignore_errors=True)
            self._staged = None

    async def fire(self, slots: list[tuple[ScheduleFile, datetime]]) -> list[Fired]:
        """Fire each ``(schedule file, slot)`` once; the slots that were not recorded before.

        Raises:
            OSError: the files could not be written (the firings stay pending: see
                :meth:`recover`); maybe within an ``ExceptionGroup``.
            StoreError: the database refused the records (the runs recorded before are
                handed to the workers all the same).
        """
        staged, self._staged = self._staged, None
        if staged is None:
            staged = _Staged(self.inbox / PROCESSING / f"{STAGING}{uuid.uuid4().hex[:12]}", {})
        files: dict[tuple[str, datetime], tuple[ScheduleFile, Named]] = {}
        stale: list[Named] = []
        for entry, slot in slots:
            held = staged.files.get((entry.name, slot))
            if held is None or held[0] is not entry:  # not staged, or its schedule changed
                held = (entry, _slot_file(entry, slot))
                stale.append(held[1])
            files[(entry.name, slot)] = held
        folder = self.inbox / PROCESSING / staged.folder.name[len(STAGING) :]
        planned = [(entry, slot, folder / named[0]) for (_, slot), (entry, named) in files.items()]
        fired_at = now_iso()
        rows = [
            (entry.name, slot_key(slot), fired_at, firings.PENDING, str(path))
            for entry, slot, path in planned
        ]
        inserted = await self._write_and_record(staged.folder, stale, rows)
        planned = [plan for plan, new in zip(planned, inserted, strict=True) if new]
        self.crash("schedule.recorded")
        if not planned:  # every one was recorded before (a restart's catch-up raced none)
            await anyio.to_thread.run_sync(partial(shutil.rmtree, staged.folder, True))
            return []
        keep = {path.name for _, _, path in planned}
        await anyio.to_thread.run_sync(place, staged.folder, folder, keep)
        self.crash("schedule.written")
        fired: list[Fired] = []
        errors: list[Exception] = []
        started_at = now_iso()  # the runs of a batch are recorded together

        async def record(entry: ScheduleFile, slot: datetime, path: Path) -> None:
            data = files[(entry.name, slot)][1][1]
            try:
                await self._record(
                    entry.name,
                    slot,
                    path,
                    data,
                    fired,
                    workflow=entry.workflow,
                    started_at=started_at,
                    hand=True,
                )
            except Exception as exc:  # the others go on: each is handed once recorded
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for entry, slot, path in planned:
                tg.start_soon(record, entry, slot, path)
        if errors:
            raise errors[0]
        return fired

    def _hand(self, name: str, run_id: int, running: bool, path: Path) -> None:
        if running:
            self.running[run_id] = name
        claimed = Claimed(path=path, source=path.name, data=None, via=VIA_SCHEDULE)
        self.handover.hand(claimed, self.leftovers)

    async def _record(
        self,
        name: str,
        slot: datetime,
        path: Path,
        data: bytes,
        fired: list[Fired],
        *,
        workflow: WorkflowDef | None = None,
        started_at: str | None = None,
        hand: bool,
    ) -> None:
        """Record the run of a slot whose file is written, link its firing to it, and (with
        ``hand``) hand it to the workers once linked."""
        recorded = await record_run(
            self.store, self.registry, path, data, workflow=workflow, started_at=started_at
        )
        self.crash("schedule.run_recorded")
        run_id, running = recorded or (None, False)
        outcome = firings.LOST if run_id is None else firings.FIRED
        await firings.link_run(self.store, name, slot_key(slot), run_id, outcome)
        fired.append(Fired(name, slot, run_id, running))
        if run_id is not None:
            if not hand and running:
                self.running[run_id] = name
            try:
                await self.store.flush(durable=True)
            finally:  # linked: handed even when the flush fails, never twice
                if hand:
                    self._hand(name, run_id, running, path)
            log.info(
                WORKFLOW_RECEIVED,
                via=VIA_SCHEDULE,
                schedule=name,
                slot=slot_key(slot),
                run_id=run_id,
                source=path.name,
                bytes=len(data),
            )

    async def _write_and_record(
        self, staging: Path, stale: list[Named], rows: list[tuple[str, str, str, str, str]]
    ) -> list[bool]:
        """Write the ``stale`` files into ``staging``, then record the firings: which were
        new. On a failure the staging folder goes (nothing recorded points into it yet:
        the next try writes anew), so a lasting fault leaves no folder per try."""
        try:
            if stale:  # not staged (or its schedule changed since): written now
                await write_all(staging, stale)
            return await firings.record_firings(self.store, rows)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(partial(shutil.rmtree, staging, True))
            raise

    async def recover(
        self, loaded: Mapping[str, ScheduleFile], *, hand: bool, folder_read: bool = True
    ) -> list[Fired]:
        """Finish the slots recorded whose run was not (see the module); those recovered.

        At start (``hand`` false) their files are left in ``processing/`` for the daemon's
        leftovers; later they are handed to the workers here. Their RUNNING runs enter
        :attr:`running` either way. While the schedules folder could not be read
        (``folder_read`` false), a slot whose file was never written stays pending: its
        schedule file may well be there, so it is not lost.
        """
        if not hand:  # at start: what a kill left staged was never recorded, or is redone
            await anyio.to_thread.run_sync(remove_staging, self.inbox / PROCESSING)
        recovered: list[Fired] = []
        for firing in await firings.pending_firings(self.store):
            slot = datetime.fromisoformat(firing.slot)
            path = Path(firing.path or "")
            run = await self.store.run_for_source(str(path)) if firing.path else None
            if run is not None:
                await firings.link_run(
                    self.store, firing.schedule, firing.slot, run["id"], firings.FIRED
                )
                running = run["status"] == "RUNNING"
                recovered.append(Fired(firing.schedule, slot, run["id"], running))
                if hand:
                    self._hand(firing.schedule, run["id"], running, path)
                elif running:  # a leftover
                    self.running[run["id"]] = firing.schedule
                continue
            data = await anyio.to_thread.run_sync(read_slot_file, path)
            entry = loaded.get(firing.schedule)
            if data is None and entry is not None and firing.path:
                data = slot_document(entry.document, slot, entry.schedule)
                staging = path.parent.with_name(STAGING + uuid.uuid4().hex[:12])
                await anyio.to_thread.run_sync(write_files, staging, [(path.name, data)])
                await anyio.to_thread.run_sync(place, staging, path.parent, {path.name})
            if data is None and not folder_read:
                continue  # settled once the folder is read (the loop recovers again)
            if data is None:
                log.warning(
                    "schedule.slot_lost",
                    schedule=firing.schedule,
                    slot=firing.slot,
                    reason="its file was never written and the schedule file is gone or invalid",
                )
                await firings.link_run(self.store, firing.schedule, firing.slot, None, firings.LOST)
                continue
            log.info("schedule.slot_recovered", schedule=firing.schedule, slot=firing.slot)
            await self._record(firing.schedule, slot, path, data, recovered, hand=hand)
        await self.store.flush(durable=True)
        return recovered


async def record_run(
    store: Store,
    registry: TaskRegistry,
    path: Path,
    data: bytes,
    *,
    workflow: WorkflowDef | None = None,
    started_at: str | None = None,
) -> tuple[int, bool] | None:
    """Record the RUNNING run of the slot file at ``path`` (or its DUPLICATE); its id and
    whether it is RUNNING (``None`` when the document is no longer valid: logged, and the
    file removed).
    ``workflow`` is the document's, when known (checked when its schedule was loaded);
    ``started_at`` the run's start, by default now."""
    source = path.name
    try:
        doc = load_json(data)
        workflow = workflow or parse_workflow(doc, registry)
    except WorkflowRejected as exc:
        log.warning("schedule.slot_invalid", source=source, errors=exc.problems)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    try:
        run_id = await store.create_run(
            name=workflow.name,
            started_at=started_at or now_iso(),
            nodes=[(node.id, node.type) for node in workflow.nodes],
            source=source,
            source_path=str(path),
            definition=public_definition(data.decode(), doc),
            idempotency_key=workflow.idempotency_key,
        )
    except DuplicateRun as exc:
        summary = await record_duplicate(
            store, workflow.name, source, source_path=str(path), duplicate_of=exc.run_id
        )
        return summary["run_id"], False
    return run_id, True
