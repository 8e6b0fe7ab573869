"""Retry: run a finished run again, keeping the nodes that succeeded.

:func:`retry_run` records a new run linked to a finished one (``retry_of``) whose
SUCCESS nodes are copied with their outputs, and runs only the rest.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from wfe_daemon.service.cancel import run_cancellable
from wfe_daemon.service.intake import PROCESSED, REJECTED
from wfe_daemon.service.reading import read_file
from wfe_daemon.store.database import Store

__all__ = ["INLINE_PARSE_MAX", "RetryPlan", "plan_retry", "record_retry", "retry_run"]

log = structlog.get_logger()

_RETRYABLE = frozenset(
    {RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED}
)
_MAX_CANDIDATES = 200
"""Files of the same name looked at when searching for a retried run's original file."""
INLINE_PARSE_MAX = 64 * 1024
"""The largest document validated on the event loop: a larger one goes to a worker thread."""


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
    plan = await plan_retry(run, settings=settings, registry=registry)
    workflow = plan.workflow
    started_perf, started_at = time.perf_counter(), now_iso()
    new_id = await record_retry(store, plan, started_at)
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


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """What a retry of ``run`` runs: the workflow, the definition stored for the new run,
    and the document (the original file's when the stored one has secrets redacted)."""

    run: RunRecord
    workflow: WorkflowDef
    definition: str
    document: Any

    @property
    def data(self) -> bytes:
        """The document as the bytes of a file (compact JSON)."""
        return compact(self.document).encode()


async def plan_retry(run: RunRecord, *, settings: Settings, registry: TaskRegistry) -> RetryPlan:
    """Check that ``run`` can be retried and find the workflow to run again.

    Raises:
        StoreError: it is not finished (RUNNING) or never ran (REJECTED, DUPLICATE).
        WorkflowRejected: the definition is no longer valid, or its secrets were redacted
            and the original file was not found.
    """
    if run["status"] not in _RETRYABLE:
        raise StoreError(
            f"run {run['id']} is {run['status']}: only a finished run that ran "
            "(SUCCESS, PARTIAL_SUCCESS, FAILED or CANCELLED) can be retried"
        )
    workflow, definition, document = await _definition(run, settings, registry)
    return RetryPlan(run, workflow, definition, document)


async def record_retry(
    store: Store, plan: RetryPlan, started_at: str, source_path: str | None = None
) -> int:
    """Record the retry ``plan`` describes as a RUNNING run (its SUCCESS nodes reused); its id.

    ``source_path`` is the file the daemon runs it from, for a retry handed to the daemon.
    """
    run, workflow = plan.run, plan.workflow
    return await store.create_retry(
        run["id"],
        name=workflow.name,
        started_at=started_at,
        nodes=[(node.id, node.type) for node in workflow.nodes],
        source=run["source"],
        definition=plan.definition,
        idempotency_key=workflow.idempotency_key,
        reused_reason=f"output reused from run {run['id']}",
        source_path=source_path,
    )


async def _definition(
    run: RunRecord, settings: Settings, registry: TaskRegistry
) -> tuple[WorkflowDef, str, Any]:
    """The workflow to retry, the definition to store for the new run (as stored) and the
    document it was parsed from."""
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
    definition = compact(stored)
    if len(definition) > INLINE_PARSE_MAX:  # a large one is validated off the event loop
        workflow = await asyncio.to_thread(parse_workflow, doc, registry)
    else:
        workflow = parse_workflow(doc, registry)
    return workflow, definition, doc


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
