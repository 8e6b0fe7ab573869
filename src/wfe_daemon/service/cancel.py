"""Cancel requests: ``wfe-daemon cancel`` asks, every process that executes runs serves.

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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

import anyio
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.core.model import RunStatus
from wfe_daemon.errors import StoreError
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.service.recovery import process_alive
from wfe_daemon.store.database import Store
from wfe_daemon.taskgroup import one_error

__all__ = ["CANCEL_POLL_S", "cancel_here", "request_cancel", "run_cancellable", "watch_cancels"]

T = TypeVar("T")

log = structlog.get_logger()

CANCEL_POLL_S = 0.25
"""How often a process checks for cancel requests (one ``PRAGMA data_version``)."""


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


async def cancel_here(store: Store, engine: Engine, run_id: int) -> str | None:
    """Ask for run ``run_id`` to be cancelled and apply it at once when ``engine`` runs it;
    the run's status (``None``: no such run). A RUNNING run not started yet (or of another
    process) takes the request when it starts, as with :func:`request_cancel`."""
    found = await store.request_cancel(run_id, now_iso())
    if found is None:
        return None
    if found["status"] == RunStatus.RUNNING:
        await apply_cancel_requests(store, engine)
    return found["status"]


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
    with one_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_cancels, store, engine)
            result = await work
            tg.cancel_scope.cancel()
    return result
