"""Schedule files: a workflow document with a ``schedule`` object, one per file in
``schedules_dir`` (``<name>.json``; the name is the file's stem).

The document a slot runs is the file's without ``schedule``, plus ``scheduled_for`` (the
slot in the schedule's time zone, ISO 8601), kept as ``<name>.<slot>.json`` where
``<slot>`` is :func:`~wfe_daemon.core.schedule.slot_stamp`'s form
(``20261204T020000+0100``), so its result is ``<name>.<slot>.result.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wfe_daemon.core.model import WorkflowDef, parse_workflow
from wfe_daemon.core.schedule import (
    CronMatcher,
    Schedule,
    parse_schedule,
    scheduled_for,
    slot_stamp,
)
from wfe_daemon.core.strictjson import compact, load_json, show
from wfe_daemon.errors import WorkflowRejected
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.handover import stem_problem
from wfe_daemon.service.reading import read_file

__all__ = [
    "ScheduleFile",
    "Signature",
    "read_schedule",
    "scan_folder",
    "slot_document",
    "slot_stem",
]

Signature = tuple[int, int, int]
"""What tells a changed file: ``(st_mtime_ns, st_size, st_ino)``."""

_EXAMPLE_SLOT = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleFile:
    """A valid schedule file: its ``name`` (stem), its schedule, and the workflow
    ``document`` it runs (without ``schedule``)."""

    name: str
    path: Path
    schedule: Schedule
    document: dict[str, Any]
    workflow: WorkflowDef
    signature: Signature


def scan_folder(folder: Path) -> dict[str, tuple[Path, Signature]]:
    """The schedule files of ``folder`` by name: regular ``*.json`` files of its top level
    (dotfiles, other suffixes, folders and symlinks are not schedules).

    Raises:
        OSError: the folder cannot be listed.
    """
    found: dict[str, tuple[Path, Signature]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            found[entry.name[: -len(".json")]] = (
                Path(entry.path),
                (st.st_mtime_ns, st.st_size, st.st_ino),
            )
    return found


def read_schedule(
    path: Path, registry: TaskRegistry, cron: CronMatcher, max_size: int
) -> ScheduleFile:
    """Read and check one schedule file.

    Raises:
        WorkflowRejected: with every problem (of the file, its ``schedule``, its workflow).
        OSError: it cannot be read.
    """
    contents = read_file(path, max_size)
    if contents.data is None:
        raise WorkflowRejected([f"file is over max_file_size {max_size}"])
    st = contents.stat
    doc = load_json(contents.data)
    if not isinstance(doc, dict):
        raise WorkflowRejected([f"workflow: must be a JSON object, got {show(doc)}"])
    problems: list[str] = []
    name = path.name[: -len(".json")] if path.name.endswith(".json") else path.stem
    if (problem := stem_problem(name)) is not None:
        problems.append(f"file name: {problem}")
    schedule: Schedule | None = None
    if "schedule" in doc:
        schedule, found = parse_schedule(doc.pop("schedule"), cron)
        problems += found
    else:
        problems.append("schedule: required in a schedule file")
    if "scheduled_for" in doc:
        problems.append("scheduled_for: set by the schedule for each slot, not in its file")
    if "idempotency_key" in doc:
        problems.append(
            "idempotency_key: not for schedule files: each slot already runs exactly once"
        )
    workflow: WorkflowDef | None = None
    try:
        workflow = parse_workflow({**doc, "scheduled_for": _EXAMPLE_SLOT.isoformat()}, registry)
    except WorkflowRejected as exc:
        problems += exc.problems
    if problems or schedule is None or workflow is None:
        raise WorkflowRejected(list(dict.fromkeys(problems)))
    signature = (st.st_mtime_ns, st.st_size, st.st_ino)
    return ScheduleFile(name, path, schedule, doc, workflow, signature)


def slot_document(document: dict[str, Any], slot: datetime, schedule: Schedule) -> bytes:
    """The document a slot runs: ``document`` with ``scheduled_for`` set to the slot."""
    return compact({**document, "scheduled_for": scheduled_for(slot, schedule.zone)}).encode()


def slot_stem(name: str, slot: datetime, schedule: Schedule) -> str:
    """``<name>.<slot>``: the stem of a slot's file and result."""
    return f"{name}.{slot_stamp(slot, schedule.zone)}"
