"""Steering and tidying the service: cancel requests, retries and history retention.

Cancel
    ``wfe-daemon cancel RUN_ID`` needs no network API: :func:`request_cancel` inserts a
    row into ``cancel_request``. Every process that executes runs (the daemon, and the
    ``execute`` and ``retry`` commands) serves those rows with :func:`watch_cancels`: every
    :data:`CANCEL_POLL_S` seconds it reads SQLite's ``PRAGMA data_version``, which changes
    only when *another* connection commits, and reads the requests only then (or while
    some request still waits), so an idle process costs one tiny statement per poll. A
    request for a run the process executes is applied (:meth:`Engine.cancel`) and
    deleted; a request for a run that no longer runs is deleted; a request for a RUNNING
    run of another process (or of nobody, while the daemon is down) stays, and
    :meth:`Engine.resume` applies it when the run resumes. A run of an ``execute`` that
    died is not resumed but abandoned at the daemon's next start; its request is dropped.

Retry
    :func:`retry_run` records a new run linked to a finished one (``retry_of``) whose
    SUCCESS nodes are copied with their outputs, and runs only the rest.

Retention
    :func:`prune_history` deletes runs that finished more than ``history_retention_days``
    ago, with their nodes, and the old input files in ``inbox/processed/`` and
    ``inbox/rejected/``; :func:`keep_history` runs it at start and every day. It never
    VACUUMs: SQLite reuses the freed pages for new rows, and the file does not shrink.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.config import Settings
from wfe_daemon.core.model import (
    NodeStatus,
    RunStatus,
    WorkflowDef,
    holds_redacted,
    parse_workflow,
    redact_secrets,
)
from wfe_daemon.core.nodestate import reusable_states
from wfe_daemon.core.records import RunRecord
from wfe_daemon.core.strictjson import compact, load_json
from wfe_daemon.core.summary import RunSummary, retried
from wfe_daemon.errors import StoreError, WorkflowRejected
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.intake import PROCESSED, REJECTED
from wfe_daemon.service.reading import read_file
from wfe_daemon.service.recovery import process_alive
from wfe_daemon.store.database import Store

__all__ = [
    "CANCEL_POLL_S",
    "keep_history",
    "prune_history",
    "request_cancel",
    "retry_run",
    "run_cancellable",
    "watch_cancels",
]

T = TypeVar("T")
log = structlog.get_logger()

CANCEL_POLL_S = 0.25
"""How often a process checks for cancel requests (one ``PRAGMA data_version``)."""
PRUNE_EVERY_S = 24 * 3600.0
PRUNE_BATCH = 500
"""Runs deleted per transaction, so the writer never holds a long one."""
_RETRYABLE = frozenset(
    {RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED}
)
_MAX_CANDIDATES = 200
"""Files of the same name looked at when searching for a retried run's original file."""


# -- cancel ------------------------------------------------------------------------------------


async def request_cancel(store: Store, run_id: int) -> str:
    """Ask for run ``run_id`` to be cancelled; a one-line message for the operator.

    The process running it (daemon, ``execute`` or ``retry``) applies the request within
    about :data:`CANCEL_POLL_S` seconds; when no process runs it now, the request waits
    for the run to be resumed at the daemon's next start.

    Raises:
        StoreError: there is no such run, or it is not RUNNING (already finished).
    """
    found = await store.request_cancel(run_id, now_iso())
    if found is None:
        raise StoreError(f"no run {run_id}")
    if found["status"] != RunStatus.RUNNING:
        raise StoreError(
            f"run {run_id} is not running (it is {found['status']}): nothing to cancel"
        )
    if found["pid"] is not None and process_alive(found["pid"]):
        return f"cancel requested for run {run_id}"
    return (
        f"cancel requested for run {run_id}; no process runs it now: "
        "it is applied when the run resumes"
    )


async def apply_cancel_requests(store: Store, engine: Engine) -> tuple[list[int], int]:
    """Apply the pending requests in ``store`` for runs ``engine`` executes; drop those for
    ended runs.

    Returns the runs cancelled here, and how many requests are left waiting (for runs of
    another process, or not resumed yet).
    """
    handled: list[int] = []
    cancelled: list[int] = []
    requests = await store.cancel_requests()
    for request in requests:
        run_id = request["run_id"]
        if engine.cancel(run_id):
            cancelled.append(run_id)
            handled.append(run_id)
        elif request["status"] != RunStatus.RUNNING:  # finished meanwhile, or pruned
            handled.append(run_id)
    store.drop_cancel_requests(handled)
    for run_id in cancelled:
        log.info("workflow.cancelling", run_id=run_id)
    return cancelled, len(requests) - len(handled)


async def watch_cancels(
    store: Store, engine: Engine, *, interval_s: float = CANCEL_POLL_S
) -> NoReturn:
    """Serve cancel requests for ``engine``'s runs until cancelled (see the module doc).

    A failing database is logged and retried at the next poll, never raised: cancelling
    must not take the process down.
    """
    seen: int | None = None
    waiting = 0
    while True:
        try:
            version = await store.data_version()
            # While requests wait, look again every time: their run may have become ours
            # (resumed, or just created) without any other connection committing.
            if version != seen or waiting:
                _, waiting = await apply_cancel_requests(store, engine)
                seen = version
        except Exception as exc:  # e.g. the disk is full: try again next time
            log.warning("cancel.poll_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval_s)


async def run_cancellable(store: Store, engine: Engine, work: Awaitable[T]) -> T:
    """Await ``work`` (a run on ``engine``) while serving the cancel requests of ``store``."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_cancels, store, engine)
        result = await work
        tg.cancel_scope.cancel()
    return result


# -- retry -------------------------------------------------------------------------------------


async def retry_run(
    run_id: int, *, settings: Settings, registry: TaskRegistry, store: Store, engine: Engine
) -> RunSummary:
    """Run finished run ``run_id`` again, reusing its SUCCESS nodes; the new run's summary.

    Only the nodes that did not succeed (FAILED, SKIPPED, CANCELLED) run; the others keep
    their outputs, copied into the new run (reason ``output reused from run N``). The new
    run records ``retry_of`` and its summary has ``"retry_of": run_id``. The workflow is
    the stored definition, or, when its secrets were redacted there, the original file
    found in ``inbox/processed/`` or ``inbox/rejected/``; it is validated again. The retry
    takes the original's ``idempotency_key`` only when no other run holds it. Cancel
    requests for the new run are served while it runs. ``engine`` runs over ``store``.

    Raises:
        StoreError: no such run, or it is not finished (RUNNING) or never ran (REJECTED,
            DUPLICATE).
        WorkflowRejected: the definition is no longer valid (e.g. a task type is gone), or
            its secrets were redacted and the original file was not found.
    """
    run = await store.get_run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id}")
    if run["status"] not in _RETRYABLE:
        raise StoreError(
            f"run {run_id} is {run['status']}: only a finished run that ran "
            "(SUCCESS, PARTIAL_SUCCESS, FAILED or CANCELLED) can be retried"
        )
    workflow, definition = await _definition(run, settings, registry)
    started_perf, started_at = time.perf_counter(), now_iso()
    new_id = await store.create_retry(
        run_id,
        name=workflow.name,
        started_at=started_at,
        nodes=[(node.id, node.type) for node in workflow.nodes],
        source=run["source"],
        definition=definition,
        idempotency_key=workflow.idempotency_key,
        reused_reason=f"output reused from run {run_id}",
    )
    new = await store.get_run(new_id)
    assert new is not None
    done = reusable_states(workflow, new["nodes"], {NodeStatus.SUCCESS})
    log.info("workflow.retry", run_id=new_id, retry_of=run_id, reused=len(done))
    summary = await run_cancellable(
        store,
        engine,
        engine.resume(
            workflow,
            new_id,
            started_at=started_at,
            source=run["source"],
            done=done,
            started_perf=started_perf,
        ),
    )
    summary = retried(summary, run_id)
    await store.set_summary(new_id, summary)
    return summary


async def _definition(
    run: RunRecord, settings: Settings, registry: TaskRegistry
) -> tuple[WorkflowDef, str]:
    """The workflow to retry and the definition to store for the new run (as stored)."""
    stored = run["definition"]
    if not isinstance(stored, dict):
        raise WorkflowRejected([f"run {run['id']}: no stored definition to retry"])
    doc = stored
    if holds_redacted(stored):  # the database has "***" where secrets were: find the file
        doc = await asyncio.to_thread(_find_original, settings, run, stored)
        if doc is None:
            raise WorkflowRejected(
                [
                    f"run {run['id']}: its secrets were redacted in the database and the "
                    f"original file {run['source']!r} is no longer in inbox/processed/ or "
                    "inbox/rejected/; drop the file again instead"
                ]
            )
    return parse_workflow(doc, registry), compact(stored)


def _find_original(settings: Settings, run: RunRecord, stored: Any) -> Any:
    """The parsed original file of ``run`` whose redacted form is ``stored``, or ``None``.

    Looks at the run's own path (``execute``), then at ``processed/`` and ``rejected/``
    for the source name and the ``<stem>.<unique><suffix>`` names given on a clash.
    """
    inbox, source = settings.inbox, Path(run["source"] or "")
    candidates: list[Path] = []
    if source_path := run["source_path"]:
        candidates.append(Path(source_path))
    if source.name:
        for folder in (inbox / PROCESSED, inbox / REJECTED):
            candidates.append(folder / source.name)
            try:
                clashes = sorted(folder.glob(f"{source.stem}.*{source.suffix}"))
            except OSError:
                continue
            candidates.extend(clashes[:_MAX_CANDIDATES])
    for path in candidates:
        try:
            data = read_file(path, settings.max_file_size, follow_symlinks=True).data
            if data is None:
                continue
            doc = load_json(data)
        except (OSError, WorkflowRejected, ValueError):
            continue
        if redact_secrets(doc) == stored:
            return doc
    return None


# -- retention ---------------------------------------------------------------------------------


async def prune_history(store: Store, settings: Settings) -> dict[str, int]:
    """Delete the history older than ``settings.history_retention_days``; counts deleted.

    Deletes runs that finished before the cutoff (never RUNNING ones) with their nodes,
    :data:`PRUNE_BATCH` runs per transaction, and the files in ``inbox/processed/`` and
    ``inbox/rejected/`` last modified before it (in a worker thread). Nothing in
    ``inbox/processing/`` is touched. With 0 days (the default) nothing is deleted.

    Returns:
        ``{"runs": n, "nodes": n, "files": n}``.
    """
    days = settings.history_retention_days
    if days <= 0:
        return {"runs": 0, "nodes": 0, "files": 0}
    cutoff = datetime.now(UTC) - timedelta(days=days)
    runs, nodes = await store.prune_runs(cutoff.isoformat(timespec="microseconds"), PRUNE_BATCH)
    folders = [settings.inbox / PROCESSED, settings.inbox / REJECTED]
    files = await asyncio.to_thread(_delete_old_files, folders, cutoff.timestamp())
    return {"runs": runs, "nodes": nodes, "files": files}


def _delete_old_files(folders: list[Path], before: float) -> int:
    """Delete the regular files of ``folders`` (top level) modified before ``before``."""
    deleted = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if (
                    entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < before
                ):
                    os.unlink(entry.path)
                    deleted += 1
            except FileNotFoundError:
                continue
    return deleted


async def keep_history(store: Store, settings: Settings, *, every_s: float = PRUNE_EVERY_S) -> None:
    """Prune the history now and then every ``every_s`` seconds (a no-op with 0 days).

    Logs ``history.pruned`` with the counts; a failure is logged and retried next time.
    """
    if settings.history_retention_days <= 0:
        return
    while True:
        try:
            counts = await prune_history(store, settings)
            log.info("history.pruned", days=settings.history_retention_days, **counts)
        except Exception as exc:
            log.warning("history.prune_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every_s)
