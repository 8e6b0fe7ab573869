"""``schedules`` and ``trigger``: the schedule files as the daemon sees them, and a run now.

``schedules`` reads the folder and the database (read-only): each schedule with its next
three fire times, its last run and that run's status. ``trigger NAME`` hands the daemon a
run of the schedule's workflow now, as ``submit`` does (its HTTP API when ``http_port``
is set, else its inbox): not a slot of the schedule (no firing is recorded, ``overlap``
does not apply), with ``scheduled_for`` set to the current second and the stem
``<name>.<that time>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from wfe_daemon.cli.runargs import with_arguments
from wfe_daemon.config import Settings
from wfe_daemon.core.model import parse_workflow
from wfe_daemon.core.schedule import NeverFires, next_slots
from wfe_daemon.core.strictjson import load_json
from wfe_daemon.errors import UsageError, WorkflowRejected
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service import clocks
from wfe_daemon.service.cron import Cronsim
from wfe_daemon.service.reading import read_file
from wfe_daemon.service.schedules import read_schedule, scan_folder, slot_document, slot_stem
from wfe_daemon.store import firings
from wfe_daemon.store.database import Store

__all__ = [
    "ScheduleRow",
    "list_schedules",
    "now_for",
    "schedules_table",
    "trigger_document",
    "validate_schedule",
]

ScheduleRow = dict[str, Any]
"""One schedule as ``schedules --json`` prints it."""


async def list_schedules(settings: Settings, registry: TaskRegistry) -> list[ScheduleRow]:
    """Every schedule file of ``schedules_dir``, by name, with its next three fire times
    (``[]`` when paused or invalid), its last run and that run's status.

    Raises:
        UsageError: the folder cannot be read.
        StoreError: the database cannot be read.
    """
    folder = settings.schedules
    try:
        found = scan_folder(folder)
    except FileNotFoundError:
        found = {}
    except OSError as exc:
        raise UsageError(f"schedules_dir: cannot read {folder}: {exc.strerror or exc}") from exc
    async with Store.open_read_only(settings.db_path) as store:
        last = await firings.last_firings(store)
    now, cron = clocks.CLOCK.now(), Cronsim()
    rows: list[ScheduleRow] = []
    for name, (path, _) in sorted(found.items()):
        row: ScheduleRow = {"name": name, "schedule": None, "paused": False, "next": []}
        try:
            entry = read_schedule(path, registry, cron, settings.max_file_size)
        except (WorkflowRejected, OSError) as exc:
            row["errors"] = exc.problems if isinstance(exc, WorkflowRejected) else [str(exc)]
        else:
            schedule = entry.schedule
            row.update(schedule=schedule.describe(), paused=schedule.paused, errors=[])
            try:
                upcoming = [] if schedule.paused else next_slots(schedule, cron, now, 3)
            except NeverFires as exc:
                upcoming, row["errors"] = [], [str(exc)]
            row["next"] = [slot.astimezone(schedule.zone).isoformat() for slot in upcoming]
        firing = last.get(name)
        row["last_run"] = None if firing is None else firing.run_id
        row["last_status"] = None if firing is None else firing.run_status
        row["last_slot"] = None if firing is None else firing.slot
        rows.append(row)
    return rows


def schedules_table(rows: list[ScheduleRow]) -> str:
    """The rows as an aligned text table (times in each schedule's zone)."""
    header = ("NAME", "SCHEDULE", "NEXT", "LAST RUN", "STATUS")
    lines = [header]
    for row in rows:
        if row["errors"]:
            what, upcoming = "invalid", row["errors"][0]
        else:
            what = row["schedule"] + (" (paused)" if row["paused"] else "")
            upcoming = ", ".join(stamp.replace("T", " ") for stamp in row["next"]) or "-"
        run = "-" if row["last_run"] is None else str(row["last_run"])
        lines.append((row["name"], what, upcoming, run, row["last_status"] or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    ).rstrip()


def trigger_document(
    settings: Settings, registry: TaskRegistry, name: str, now: datetime
) -> tuple[bytes, str]:
    """The document and stem of a run of schedule ``name`` now (see the module).

    Raises:
        UsageError: there is no such schedule file.
        WorkflowRejected: the file is invalid (every problem).
    """
    path = settings.schedules / f"{name}.json"
    if not path.is_file():
        raise UsageError(f"no schedule {name!r}: no file {path}")
    entry = read_schedule(path, registry, Cronsim(), settings.max_file_size)
    slot = now.replace(microsecond=0)
    return slot_document(entry.document, slot, entry.schedule), slot_stem(
        name, slot, entry.schedule
    )


def validate_schedule(
    path: Path, settings: Settings, registry: TaskRegistry, given: Mapping[str, Any]
) -> bool:
    """Check ``path`` as a schedule file when it holds a ``schedule`` object; whether it did.

    With ``given`` values (``-p``), its workflow is checked as ``trigger`` would run it.

    Raises:
        WorkflowRejected: it is a schedule file, with problems (every one).
    """
    try:
        doc = load_json(read_file(path, settings.max_file_size).data or b"")
    except (OSError, WorkflowRejected):
        return False  # the workflow check reports it
    if not isinstance(doc, dict) or "schedule" not in doc:
        return False
    entry = read_schedule(path, registry, Cronsim(), settings.max_file_size)
    if given:
        slot = now_for().replace(microsecond=0)
        document = slot_document(entry.document, slot, entry.schedule)
        parse_workflow(with_arguments(document, given), registry)
    return True


def now_for() -> datetime:
    """The current instant, as the scheduler reads it."""
    return clocks.CLOCK.now()
