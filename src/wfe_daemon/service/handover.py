"""Workflows handed to the running daemon (its HTTP API): kept on disk, recorded, then run.

A submission is made durable in the shape a crash leaves a claimed file in: the document
is written into ``inbox/processing/<hex>/<stem>.json`` (temporary file, fsync, rename,
fsync of the folders) and its run is recorded RUNNING with that ``source_path``, durably,
before the client is answered. The workers then take the file as a leftover
(:func:`~wfe_daemon.service.recovery.recover`): the RUNNING run starts, a DUPLICATE is
published, and the result reaches the outbox as a dropped file's does.

A kill at any point leaves one of: nothing (a temporary dotfile, removed at the next
start); the file without a run (submitted afresh at the next start, the client got no
answer); the file and its run (resumed at the next start). An answered submission is
never lost, and never run twice.

A detached retry (:func:`accept_retry`) is recorded first, then its file is written: a
kill between the two leaves a run without a file, which the next start ends as
interrupted, rather than a file that would run as a fresh workflow.

Nothing is written while the store is not taking writes or the daemon stops
(:class:`NotTaken`). The record runs in a task of the :class:`Handover` and is waited for
:data:`RECORD_TIMEOUT_S`: past that the caller gets :class:`Undecided` while the record
goes on (its file is run once recorded, removed if the record fails); one that fails for
sure removes the file at once (the store never runs a call reported failed).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from pathlib import Path

import anyio
import anyio.abc
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.config import Settings
from wfe_daemon.core.model import WorkflowDef, parse_workflow, public_definition
from wfe_daemon.core.records import RunRecord
from wfe_daemon.core.strictjson import compact, load_json
from wfe_daemon.errors import DuplicateRun, StoreError, WfeError, WorkflowRejected
from wfe_daemon.logs import WORKFLOW_RECEIVED
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.feeder import (
    RECORD_TIMEOUT_S,
    Accepted,
    Handover,
    NotTaken,
    Undecided,
)
from wfe_daemon.service.intake import PROCESSING, Claimed, describe_os_error
from wfe_daemon.service.outbox import fsync_dir
from wfe_daemon.service.recovery import abandon
from wfe_daemon.service.retry import INLINE_PARSE_MAX, plan_retry, record_retry
from wfe_daemon.service.submission import record_duplicate
from wfe_daemon.store.database import Store

__all__ = [
    "RECORD_TIMEOUT_S",
    "Accepted",
    "Handover",
    "NotTaken",
    "TooLarge",
    "Undecided",
    "accept",
    "accept_retry",
    "stem_problem",
]

log = structlog.get_logger()

STEM_MAX = 100
"""The longest file stem a submission may name (``?name=``)."""
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # "+": a slot's offset
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
VIA_API = "api"


class TooLarge(WfeError):
    """Raised when the document to keep is larger than ``max_file_size`` (``size`` bytes):
    re-encoded to hold an ``Idempotency-Key``, or a retry's stored workflow. A file that
    large would be refused when the workers read it."""

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(f"{what} is {size} bytes, over max_file_size, {limit} bytes")
        self.size = size
        self.limit = limit


def stem_problem(stem: str) -> str | None:
    """Why ``stem`` cannot name a submission's files (``None``: it can)."""
    if len(stem) > STEM_MAX:
        return f"a file stem is at most {STEM_MAX} characters, got {len(stem)}"
    if not _SAFE_STEM.fullmatch(stem):
        return (
            f"{stem!r} is not a safe file stem: use letters, digits, '.', '_', '+' and '-', "
            "starting with a letter or a digit"
        )
    return None


def stem_of(name: str) -> str:
    """A safe file stem made from a workflow's name (other characters become ``_``)."""
    stem = _UNSAFE.sub("_", name).lstrip("._-")[:STEM_MAX]
    return stem or "workflow"


def parse_submission(
    data: bytes, registry: TaskRegistry, idempotency_key: str | None, max_size: int
) -> tuple[WorkflowDef, bytes, str]:
    """Validate ``data`` as a file is validated; the workflow, the bytes to keep, and the
    definition to store (secrets redacted).

    ``idempotency_key`` (the ``Idempotency-Key`` header) is written into a document that has
    none (the bytes kept are then the document re-encoded, which must still fit
    ``max_size``).

    Raises:
        WorkflowRejected: with every problem; or the document holds another key.
        TooLarge: the re-encoded document is over ``max_size``.
    """
    doc = load_json(data)
    if idempotency_key is not None and isinstance(doc, dict):
        held = doc.get("idempotency_key")
        if held is None:
            doc["idempotency_key"] = idempotency_key
            data = compact(doc).encode()
            if len(data) > max_size:
                raise TooLarge(len(data), max_size, "the workflow with its Idempotency-Key")
        elif held != idempotency_key:
            raise WorkflowRejected(
                [
                    f"the Idempotency-Key header {idempotency_key!r} differs from the "
                    f"document's idempotency_key {held!r}: send one of them, or the same"
                ]
            )
    workflow = parse_workflow(doc, registry)
    return workflow, data, public_definition(data.decode("utf-8-sig"), doc)


async def accept(
    data: bytes,
    *,
    settings: Settings,
    registry: TaskRegistry,
    store: Store,
    handover: Handover,
    leftovers: set[Path],
    stem: str | None = None,
    idempotency_key: str | None = None,
) -> Accepted:
    """Validate ``data``, write it into ``processing/``, record its run durably and hand
    the file to the workers (through ``handover``, as one of the daemon's ``leftovers``).

    ``stem`` names the file (and so the result); by default, the workflow's name made safe.
    A run already holding the idempotency key makes this a DUPLICATE, recorded as a
    dropped file's is. The record is waited for :data:`RECORD_TIMEOUT_S` at most.

    Raises:
        WorkflowRejected: the document is not valid; nothing was written or recorded.
        TooLarge: re-encoded with the key, it is over ``max_file_size``; likewise.
        NotTaken: the database is not taking writes, or the daemon is stopping (nothing
            was written), or the record failed (the file was removed).
        OSError: the file cannot be written; nothing was recorded.
        Undecided: the record did not end in time; the daemon goes on with it.
    """
    if len(data) > INLINE_PARSE_MAX:
        parsed = await anyio.to_thread.run_sync(
            parse_submission, data, registry, idempotency_key, settings.max_file_size
        )
    else:
        parsed = parse_submission(data, registry, idempotency_key, settings.max_file_size)
    workflow, data, definition = parsed
    _check_open(store, handover)
    stem = stem or stem_of(workflow.name)
    source = f"{stem}.json"
    path = _new_path(settings.inbox, stem)
    await anyio.to_thread.run_sync(write_durably, path, data)
    claimed = Claimed(path=path, source=source, data=None, via=VIA_API)

    async def record() -> Accepted:
        try:
            run_id = await store.create_run(
                name=workflow.name,
                started_at=now_iso(),
                nodes=[(node.id, node.type) for node in workflow.nodes],
                source=source,
                source_path=str(path),
                definition=definition,
                idempotency_key=workflow.idempotency_key,
            )
        except DuplicateRun as exc:
            summary = await record_duplicate(
                store, workflow.name, source, source_path=str(path), duplicate_of=exc.run_id
            )
            return Accepted(summary["run_id"], "DUPLICATE", claimed, duplicate_of=exc.run_id)
        except StoreError as exc:
            # The write queue never runs a call whose caller was told it failed: the file
            # would run unrecorded at the next start, so it goes.
            await anyio.to_thread.run_sync(_remove, path)
            raise NotTaken(f"the run could not be recorded: {exc}") from exc
        await store.flush(durable=True)
        log.info(WORKFLOW_RECEIVED, via=VIA_API, run_id=run_id, source=source, bytes=len(data))
        return Accepted(run_id, "RUNNING", claimed)

    try:
        return await handover.settle(record, leftovers, what=f"submission {path}")
    except NotTaken:
        # Refused after the file was written (the stop began meanwhile): the client hears
        # "not taken", so the file must not run at the next start.
        await anyio.to_thread.run_sync(_remove, path)
        raise


async def accept_retry(
    run: RunRecord,
    *,
    settings: Settings,
    registry: TaskRegistry,
    store: Store,
    handover: Handover,
    leftovers: set[Path],
) -> Accepted:
    """Record a retry of finished ``run``, write its workflow into ``processing/`` and hand
    the file to the workers (as :func:`accept` does).

    The file holds the workflow as it ran (the original file when the stored definition
    has its secrets redacted: see :func:`~wfe_daemon.service.retry.plan_retry`).

    Raises:
        StoreError: ``run`` cannot be retried (RUNNING, REJECTED, DUPLICATE).
        WorkflowRejected: its workflow is no longer valid, or cannot be found.
        TooLarge: its workflow, re-encoded, is over ``max_file_size``; nothing is recorded.
        OSError: its file cannot be written (the new run is then ended at once).
        NotTaken: the database is not taking writes, or the daemon is stopping.
        Undecided: the record did not end within :data:`RECORD_TIMEOUT_S`; the daemon
            goes on with it (and writes the file once it is recorded).
    """
    plan = await plan_retry(run, settings=settings, registry=registry)
    data = plan.data
    if len(data) > settings.max_file_size:
        raise TooLarge(len(data), settings.max_file_size, f"run {run['id']}'s workflow")
    _check_open(store, handover)
    source = run["source"] or f"{stem_of(plan.workflow.name)}.json"
    path = _new_path(settings.inbox, stem_of(Path(source).stem))

    async def record() -> Accepted:
        new_id = await record_retry(store, plan, now_iso(), source_path=str(path))
        await store.flush(durable=True)
        try:
            await anyio.to_thread.run_sync(write_durably, path, data)
        except OSError as exc:  # e.g. a full disk: the run must not wait for a file forever
            reason = f"cannot write its file {path}: {describe_os_error(exc)}"
            await abandon(store, new_id, reason)
            raise
        log.info("workflow.retry", via=VIA_API, run_id=new_id, retry_of=run["id"], source=source)
        claimed = Claimed(path=path, source=Path(source).name, data=None, via=VIA_API)
        return Accepted(new_id, "RUNNING", claimed, retry_of=run["id"])

    return await handover.settle(record, leftovers, what=f"retry of run {run['id']}")


def _check_open(store: Store, handover: Handover) -> None:
    """Refuse a submission before anything is written for it, when it could not be taken."""
    if not store.healthy:
        raise NotTaken("the database is not taking writes now (the daemon keeps trying)")
    if not handover.open:
        raise NotTaken("the daemon is not taking submissions now (it is stopping)")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _new_path(inbox: Path, stem: str) -> Path:
    """A fresh ``processing/<hex>/<stem>.json``: the file keeps its plain name, which
    recovery reads back as its source, and never meets another file's."""
    return inbox / PROCESSING / uuid.uuid4().hex[:12] / f"{stem}.json"


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` (whose folder is new, inside ``processing/``), durably.

    The bytes go to a dot-prefixed temporary file of ``processing/`` (which recovery skips
    and the next start removes), are fsynced, renamed into place, then both folders are
    fsynced.

    Raises:
        OSError: the file could not be written, or not made durable; nothing is left
            behind (a file left would run at the next start, unanswered).
    """
    processing = path.parent.parent
    fd, tmp_name = tempfile.mkstemp(prefix=".submit.", suffix=".tmp", dir=processing)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        path.parent.mkdir()
        os.rename(tmp_name, path)
        fsync_dir(path.parent)
        fsync_dir(processing)
    except BaseException:
        for name in (tmp_name, path):
            with contextlib.suppress(OSError):
                os.unlink(name)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        raise
