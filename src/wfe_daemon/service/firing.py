"""Firing slots: each slot recorded once, then its file written, then its run recorded.

A scheduled run takes the path of a workflow handed over by the API
(:mod:`wfe_daemon.service.handover`): its document is written durably into
``inbox/processing/<hex>/<name>.<slot>.json``, its run recorded RUNNING with that
``source_path``, then the file goes to the workers as a leftover. Before any of that, the
slot is recorded ``pending`` in the ``firing`` table, with the path its file will take,
under the unique index on (schedule, slot), durably. The order, and what a kill at each
point leaves for the next start (:func:`recover_pending`, run before the leftovers of
``processing/`` are fed to the workers):

1. the firing row is committed (a slot already recorded is not fired again: that is
   "exactly once"); a kill before it leaves nothing, and ``catchup`` decides the slot;
2. the file is written (temporary dotfiles in ``processing/``, fsync, rename, fsync of the
   folders); a kill before it leaves a pending firing without a file: the file is made
   again from the schedule file as it is then (the slot is lost, and logged, only when
   that file is gone or invalid);
3. the run is recorded (durably) and the firing marked ``fired`` with its id; a kill
   before that leaves a pending firing with its file, and maybe its run (found by its
   ``source_path``): the run is recorded now if missing, the firing linked;
4. the file is handed to the workers; after a kill it is a leftover of ``processing/``,
   resumed as an API submission is.

Each step happens once per batch of slots due together: one transaction for the firing
rows, one thread trip writing every file into one new folder, one durable flush for the runs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.core.model import parse_workflow, public_definition
from wfe_daemon.core.strictjson import load_json
from wfe_daemon.errors import DuplicateRun, WorkflowRejected
from wfe_daemon.logs import WORKFLOW_RECEIVED
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.feeder import Handover
from wfe_daemon.service.intake import PROCESSING, Claimed
from wfe_daemon.service.outbox import fsync_dir
from wfe_daemon.service.schedules import ScheduleFile, slot_document, slot_stem
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
class Fired:
    """A slot that fired: its run (``None`` when it could not be run: logged)."""

    schedule: str
    slot: datetime
    run_id: int | None
    path: Path | None = None


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
    ) -> None:
        self.inbox = inbox
        self.registry = registry
        self.store = store
        self.handover = handover
        self.leftovers = leftovers
        self.crash = crash

    async def fire(self, slots: list[tuple[ScheduleFile, datetime]]) -> list[Fired]:
        """Fire each ``(schedule file, slot)`` once; the slots that were not recorded before.

        Raises:
            OSError: the files could not be written (the firings stay pending: see
                :meth:`recover`).
            StoreError: the database refused the records.
        """
        folder = self.inbox / PROCESSING / uuid.uuid4().hex[:12]
        planned = [
            (entry, slot, folder / f"{slot_stem(entry.name, slot, entry.schedule)}.json")
            for entry, slot in slots
        ]
        rows = [
            (entry.name, slot_key(slot), now_iso(), firings.PENDING, str(path))
            for entry, slot, path in planned
        ]
        inserted = await firings.record_firings(self.store, rows)
        planned = [plan for plan, new in zip(planned, inserted, strict=True) if new]
        self.crash("schedule.recorded")
        if not planned:
            return []
        datas = [slot_document(entry.document, slot, entry.schedule) for entry, slot, _ in planned]
        await anyio.to_thread.run_sync(
            _write_files,
            folder,
            [(path.name, data) for (_, _, path), data in zip(planned, datas, strict=False)],
        )
        self.crash("schedule.written")
        fired: list[Fired] = []
        async with anyio.create_task_group() as tg:
            for (entry, slot, path), data in zip(planned, datas, strict=True):
                tg.start_soon(self._record, entry.name, slot, path, data, fired)
        await self.store.flush(durable=True)
        self._hand(fired)
        return fired

    def _hand(self, fired: list[Fired]) -> None:
        for item in fired:
            if item.run_id is not None and item.path is not None:
                claimed = Claimed(
                    path=item.path, source=item.path.name, data=None, via=VIA_SCHEDULE
                )
                self.handover.hand(claimed, self.leftovers)

    async def _record(
        self, name: str, slot: datetime, path: Path, data: bytes, fired: list[Fired]
    ) -> None:
        """Record the run of a slot whose file is written, and link its firing to it."""
        run_id = await record_run(self.store, self.registry, path, data)
        outcome = firings.LOST if run_id is None else firings.FIRED
        await firings.link_run(self.store, name, slot_key(slot), run_id, outcome)
        fired.append(Fired(name, slot, run_id, path))
        if run_id is not None:
            log.info(
                WORKFLOW_RECEIVED,
                via=VIA_SCHEDULE,
                schedule=name,
                slot=slot_key(slot),
                run_id=run_id,
                source=path.name,
                bytes=len(data),
            )

    async def recover(self, loaded: Mapping[str, ScheduleFile], *, hand: bool) -> list[Fired]:
        """Finish the slots recorded whose run was not (see the module); those recovered.

        At start (``hand`` false) their files are left in ``processing/`` for the daemon's
        leftovers; later they are handed to the workers here.
        """
        recovered: list[Fired] = []
        for firing in await firings.pending_firings(self.store):
            slot = datetime.fromisoformat(firing.slot)
            path = Path(firing.path or "")
            run = await self.store.run_for_source(str(path)) if firing.path else None
            if run is not None:
                await firings.link_run(
                    self.store, firing.schedule, firing.slot, run["id"], firings.FIRED
                )
                recovered.append(Fired(firing.schedule, slot, run["id"]))  # a leftover
                continue
            data = await anyio.to_thread.run_sync(_read, path)
            entry = loaded.get(firing.schedule)
            if data is None and entry is not None and firing.path:
                data = slot_document(entry.document, slot, entry.schedule)
                await anyio.to_thread.run_sync(_write_files, path.parent, [(path.name, data)])
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
            await self._record(firing.schedule, slot, path, data, recovered)
        await self.store.flush(durable=True)
        if hand:
            self._hand(recovered)
        return recovered


async def record_run(store: Store, registry: TaskRegistry, path: Path, data: bytes) -> int | None:
    """Record the RUNNING run of the slot file at ``path`` (or its DUPLICATE); its id
    (``None`` when the document is no longer valid: logged, and the file removed)."""
    source = path.name
    try:
        doc = load_json(data)
        workflow = parse_workflow(doc, registry)
    except WorkflowRejected as exc:
        log.warning("schedule.slot_invalid", source=source, errors=exc.problems)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    try:
        run_id = await store.create_run(
            name=workflow.name,
            started_at=now_iso(),
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
        return summary["run_id"]
    return run_id


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_files(folder: Path, files: list[tuple[str, bytes]]) -> None:
    """Write ``files`` into ``folder`` (made here, inside ``processing/``), durably: each
    through a dotfile of ``processing/`` (which the next start removes), fsynced, renamed.

    Raises:
        OSError: nothing written is left behind.
    """
    processing = folder.parent
    done: list[str | Path] = []
    temporary: list[str] = []
    try:
        folder.mkdir(exist_ok=True)
        for name, data in files:
            fd, tmp_name = tempfile.mkstemp(prefix=".slot.", suffix=".tmp", dir=processing)
            temporary.append(tmp_name)
            with os.fdopen(fd, "wb") as fp:
                fp.write(data)
                fp.flush()
                os.fsync(fp.fileno())
            os.rename(tmp_name, folder / name)
            done.append(folder / name)
        fsync_dir(folder)
        fsync_dir(processing)
    except BaseException:
        for leftover in [*temporary, *done]:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        with contextlib.suppress(OSError):
            folder.rmdir()
        raise
