"""Crash recovery: finish what an earlier life of the daemon left half done.

A file in ``inbox/processing/`` is in one of three states, told apart by the newest run
recorded for its path that is not yet settled:

- no such run: it was claimed but never started; it is submitted afresh;
- a RUNNING run: it is resumed; nodes already final keep their state and outputs,
  nodes that were running run again (at-least-once). A workflow the HTTP API handed over
  (``service.handover``) arrives in this state too, and starts here;
- a finished run: only its publication was interrupted; the stored summary is published.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.core.model import NodeStatus, parse_workflow
from wfe_daemon.core.nodestate import reusable_states
from wfe_daemon.core.records import summary_of
from wfe_daemon.core.strictjson import load_json
from wfe_daemon.core.summary import RunSummary, retried
from wfe_daemon.errors import WorkflowRejected
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.intake import PROCESSING, Claimed
from wfe_daemon.service.reading import read_file
from wfe_daemon.service.submission import submit
from wfe_daemon.store.database import Store

log = structlog.get_logger()

_FINAL = frozenset(status for status in NodeStatus if status.is_final)


async def recover(
    claimed: Claimed,
    *,
    max_file_size: int,
    registry: TaskRegistry,
    store: Store,
    engine: Engine,
) -> RunSummary | None:
    """Bring one leftover file to a result summary (``None`` if the file vanished).

    ``registry``, ``store`` and ``engine`` are those :func:`~wfe_daemon.service.submission.submit`
    takes; a run resumed goes on in ``engine``.
    """
    try:
        data = await anyio.to_thread.run_sync(_read, claimed.path, max_file_size)
    except OSError:
        return None
    run = await store.run_for_source(str(claimed.path))
    if run is None:
        return await submit(
            data,
            registry=registry,
            store=store,
            engine=engine,
            source=claimed.source,
            source_path=claimed.path,
            problem=f"file is over max_file_size {max_file_size}",
        )
    source = run["source"] or claimed.source
    if run["status"] != "RUNNING":
        return await _as_retry(store, run["id"], run["result_summary"], run["retry_of"])
    if claimed.via is None:  # one the API handed over starts now: it was logged as received
        log.info("workflow.resumed", run_id=run["id"], source=source)
    try:
        workflow = parse_workflow(load_json(data or b""), registry)
    except WorkflowRejected as exc:  # e.g. a task type is no longer installed
        return await abandon(store, run["id"], "cannot resume: " + "; ".join(exc.problems))
    summary = await engine.resume(
        workflow,
        run["id"],
        started_at=run["started_at"],
        source=source,
        done=reusable_states(workflow, run["nodes"], _FINAL),
    )
    return await _as_retry(store, run["id"], summary, run["retry_of"])


async def _as_retry(
    store: Store, run_id: int, summary: RunSummary | None, retry_of: int | None
) -> RunSummary | None:
    """``summary`` naming the run retried (stored so) when run ``run_id`` is a retry."""
    if summary is None or retry_of is None or summary.get("retry_of") == retry_of:
        return summary
    summary = retried(summary, retry_of)
    await store.set_summary(run_id, summary)
    return summary


def _read(path: Path, max_size: int) -> bytes | None:
    """The file's bytes, or ``None`` when it is too large to read."""
    return read_file(path, max_size).data


async def abandon(store: Store, run_id: int, reason: str) -> RunSummary:
    """End a RUNNING run nobody will resume; store and return its summary."""
    finished_at = now_iso()
    status = await store.abandon_run(run_id, reason, finished_at)
    run = await store.get_run(run_id)
    assert run is not None
    summary = summary_of(run, status, finished_at)
    await store.set_summary(run_id, summary)
    return summary


async def abandon_orphans(store: Store, inbox: Path) -> None:
    """End RUNNING runs that no file in ``processing/`` and no live process will finish.

    Runs of files in ``processing/`` are resumed by :func:`recover`; runs started by a
    ``wfe-daemon execute`` that is still alive are left to it.
    """
    processing = inbox / PROCESSING
    for run in await store.unfinished_runs():
        path = run["source_path"]
        if path is not None and Path(path).is_relative_to(processing) and _exists(path):
            continue
        if run["pid"] is not None and run["pid"] != os.getpid() and process_alive(run["pid"]):
            continue
        await abandon(store, run["id"], "interrupted: the process running it ended")
        log.warning("workflow.abandoned", run_id=run["id"], source_path=path)
    for unsettled in await store.unsettled_runs():
        # Its file left processing/ but the settled mark was lost in a crash: without
        # this, a later file claimed at the same path would be taken for this run.
        if not _exists(unsettled["source_path"]):
            store.mark_settled(unsettled["id"])


def _exists(path: str) -> bool:
    return os.path.lexists(path)  # once per unfinished run at start: not worth a thread


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (a recorded owner of a run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
