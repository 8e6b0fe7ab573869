"""From the bytes of a workflow file to its result summary: reject, or run.

``execute`` and the daemon both go through :func:`submit`, so a file gets the same
result whichever way it arrives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.core.model import RunStatus, parse_workflow, printable, public_definition
from wfe_daemon.core.strictjson import load_json
from wfe_daemon.core.summary import RunSummary, build_summary
from wfe_daemon.errors import DuplicateRun, WorkflowRejected
from wfe_daemon.logs import WORKFLOW_DUPLICATE, WORKFLOW_RECEIVED, WORKFLOW_REJECTED
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.store.database import Store


async def submit(
    data: bytes | None,
    *,
    registry: TaskRegistry,
    store: Store,
    engine: Engine,
    source: str,
    source_path: Path | None = None,
    problem: str | None = None,
) -> RunSummary:
    """Validate ``data`` and run it, or record why it is rejected; return the summary.

    ``data`` is ``None`` when the file was refused unread (``problem`` says why, for
    example that it is over ``max_file_size``). ``registry`` validates it, ``store`` records
    a file that never runs, and ``engine`` (over that store) runs the rest.
    """
    # A name that is not valid UTF-8 (``execute`` of any file) is kept escaped: the
    # database, the summary and the logs hold text.
    source = printable(source)
    path_text = None if source_path is None else printable(str(source_path))
    log = structlog.get_logger().bind(source=source)
    log.info(WORKFLOW_RECEIVED, bytes=None if data is None else len(data))
    doc: Any = None
    try:
        if data is None:
            raise WorkflowRejected([problem or "file could not be read"])
        doc = load_json(data)
        workflow = parse_workflow(doc, registry)
    except WorkflowRejected as exc:
        name = doc.get("name") if isinstance(doc, dict) else None
        summary = _unrun(RunStatus.REJECTED, name, source, errors=exc.problems)
        await _record(store, summary, path_text)
        log.warning(WORKFLOW_REJECTED, run_id=summary["run_id"], errors=exc.problems)
        return summary
    definition = public_definition(data.decode("utf-8-sig"), doc)
    del doc  # a run can be long and large: keep only the typed workflow
    try:
        return await engine.run(
            workflow,
            source=source,
            source_path=path_text,
            definition=definition,
        )
    except DuplicateRun as exc:
        return await record_duplicate(
            store, workflow.name, source, source_path=path_text, duplicate_of=exc.run_id
        )


async def record_duplicate(
    store: Store, name: str, source: str, *, source_path: str | None, duplicate_of: int
) -> RunSummary:
    """Record (durably) a DUPLICATE of run ``duplicate_of``; its summary, with its run id."""
    summary = _unrun(RunStatus.DUPLICATE, name, source, duplicate_of=duplicate_of)
    await _record(store, summary, source_path)
    structlog.get_logger().info(
        WORKFLOW_DUPLICATE, source=source, run_id=summary["run_id"], duplicate_of=duplicate_of
    )
    return summary


def _unrun(
    status: RunStatus,
    name: Any,
    source: str,
    *,
    errors: list[str] | None = None,
    duplicate_of: int | None = None,
) -> RunSummary:
    """The summary of a file that never ran (its run id, 0 here, is set once it is recorded)."""
    at = now_iso()
    return build_summary(
        run_id=0,
        workflow=name if isinstance(name, str) else None,
        source=source,
        status=status,
        started_at=at,
        finished_at=at,
        duration=0.0,
        errors=errors or (),
        duplicate_of=duplicate_of,
    )


async def _record(store: Store, summary: RunSummary, source_path: str | None) -> None:
    """Store a run that never ran; sets ``summary["run_id"]``."""
    await store.record_unrun(
        status=summary["status"],
        name=summary["workflow"] or summary["source"] or "",  # _unrun always sets a source
        source=summary["source"],
        source_path=source_path,
        at=summary["started_at"],
        summary=summary,
        duplicate_of=summary.get("duplicate_of"),
    )
