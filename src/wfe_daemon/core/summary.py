"""The result summary of a run: its JSON shape and the one function that builds it. Pure.

The summary is what the outbox file, ``execute``, ``retry`` and the ``result_summary``
column hold. :func:`build_summary` is the only place one is made; a node's entry comes
from :func:`node_entry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict


class NodeEntry(TypedDict):
    """One node as the result summary shows it (keys absent when they do not apply)."""

    type: str
    status: str
    attempts: NotRequired[int]
    """Present once the node was started."""
    started_at: NotRequired[str]
    finished_at: NotRequired[str | None]
    duration: NotRequired[float | None]
    output: NotRequired[Any]
    """SUCCESS only: the output, secrets redacted (``null`` in the database's copy)."""
    error: NotRequired[str]
    reason: NotRequired[str]


class RunSummary(TypedDict):
    """The result summary of a run."""

    run_id: int
    """A file that never ran gets its id as it is stored (``Store.record_unrun``)."""
    workflow: str | None
    source: str | None
    status: str
    started_at: str
    finished_at: str | None
    """``None`` only while the run is RUNNING (a summary built live)."""
    duration: float | None
    nodes: dict[str, NodeEntry]
    errors: list[str]
    duplicate_of: NotRequired[int]
    retry_of: NotRequired[int]


def node_entry(
    type_: str,
    status: str,
    *,
    attempts: int = 0,
    started_at: str | None = None,
    finished_at: str | None = None,
    duration: float | None = None,
    output: Any = None,
    error: str | None = None,
    reason: str | None = None,
) -> NodeEntry:
    """A node's summary entry: ``output`` only for SUCCESS, times only once it started."""
    entry: NodeEntry = {"type": type_, "status": status}
    if attempts:
        entry["attempts"] = attempts
    if started_at is not None:
        entry["started_at"] = started_at
        entry["finished_at"] = finished_at
        entry["duration"] = duration
    if status == "SUCCESS":
        entry["output"] = output
    if error is not None:
        entry["error"] = error
    if reason is not None:
        entry["reason"] = reason
    return entry


def build_summary(
    *,
    run_id: int,
    workflow: str | None,
    source: str | None,
    status: str,
    started_at: str,
    finished_at: str | None,
    duration: float | None,
    nodes: Mapping[str, NodeEntry] | Iterable[tuple[str, NodeEntry]] = (),
    errors: Sequence[str] = (),
    duplicate_of: int | None = None,
    retry_of: int | None = None,
) -> RunSummary:
    """The result summary of a run, its keys in the order the outbox file shows them.

    Files that never ran (REJECTED, DUPLICATE) have no nodes; ``errors`` lists a REJECTED
    file's problems; ``duplicate_of`` and ``retry_of`` appear only when given.
    """
    summary: RunSummary = {
        "run_id": run_id,
        "workflow": workflow,
        "source": source,
        "status": str(status),
        "started_at": started_at,
        "finished_at": finished_at,
        "duration": None if duration is None else round(duration, 6),
        "nodes": dict(nodes),
        "errors": list(errors),
    }
    if duplicate_of is not None:
        summary["duplicate_of"] = duplicate_of
    if retry_of is not None:
        summary["retry_of"] = retry_of
    return summary


def retried(summary: RunSummary, retry_of: int) -> RunSummary:
    """``summary`` as a retry's: it names the run retried (the node entries are shared)."""
    return build_summary(
        run_id=summary["run_id"],
        workflow=summary["workflow"],
        source=summary["source"],
        status=summary["status"],
        started_at=summary["started_at"],
        finished_at=summary["finished_at"],
        duration=summary["duration"],
        nodes=summary["nodes"],
        errors=summary["errors"],
        duplicate_of=summary.get("duplicate_of"),
        retry_of=retry_of,
    )
