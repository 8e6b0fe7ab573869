"""From the bytes of a workflow file to its result summary: reject, or run.

``execute`` and the daemon both go through :func:`submit`, so a file gets the same
result whichever way it arrives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from wfe_daemon.engine import Engine, now_iso
from wfe_daemon.errors import WorkflowRejected
from wfe_daemon.logs import WORKFLOW_RECEIVED, WORKFLOW_REJECTED
from wfe_daemon.model import RunStatus, load_json, parse_workflow


async def submit(
    engine: Engine,
    data: bytes | None,
    *,
    source: str,
    source_path: Path | None = None,
    problem: str | None = None,
) -> dict[str, Any]:
    """Validate ``data`` and run it, or record why it is rejected; return the summary.

    ``data`` is ``None`` when the file was refused unread (``problem`` says why, for
    example that it is over ``max_file_size``).
    """
    log = structlog.get_logger().bind(source=source)
    log.info(WORKFLOW_RECEIVED, bytes=None if data is None else len(data))
    doc: Any = None
    try:
        if data is None:
            raise WorkflowRejected([problem or "file could not be read"])
        doc = load_json(data)
        workflow = parse_workflow(doc, engine.registry)
    except WorkflowRejected as exc:
        return await _reject(engine, doc, exc.problems, source, source_path, log)
    return await engine.run(
        workflow,
        source=source,
        source_path=None if source_path is None else str(source_path),
        definition=doc,
    )


async def _reject(
    engine: Engine,
    doc: Any,
    problems: list[str],
    source: str,
    source_path: Path | None,
    log: Any,
) -> dict[str, Any]:
    name = doc.get("name") if isinstance(doc, dict) else None
    name = name if isinstance(name, str) else None
    at = now_iso()
    summary: dict[str, Any] = {
        "run_id": None,
        "workflow": name,
        "source": source,
        "status": str(RunStatus.REJECTED),
        "started_at": at,
        "finished_at": at,
        "duration": 0.0,
        "nodes": {},
        "errors": problems,
    }
    summary["run_id"] = await engine.store.record_rejected(
        name=name or source,
        source=source,
        source_path=None if source_path is None else str(source_path),
        at=at,
        summary=summary,
    )
    log.warning(WORKFLOW_REJECTED, run_id=summary["run_id"], errors=problems)
    return summary
