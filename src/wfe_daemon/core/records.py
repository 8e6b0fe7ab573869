"""The rows the store returns, and the events it tells its watchers, as typed shapes. Pure.

They are ``TypedDict``s rather than dataclasses: the store makes them from SQLite rows
without a copy, ``show --json`` and ``runs --json`` print them as they are, and ``views``
reads them as plain data; a dataclass would add a conversion at each of those edges.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, TypedDict

from wfe_daemon.core.summary import NodeEntry, RunSummary, build_summary, node_entry


class NodeRecord(TypedDict):
    """One ``noderun`` row, its output decoded (``Store.get_run``)."""

    node_id: str
    type: str
    status: str
    attempts: int
    started_at: str | None
    finished_at: str | None
    duration: float | None
    result_data: Any
    error: str | None
    reason: str | None
    cause: str | None
    """For a node SKIPPED because of a failure upstream: the id of the node that failed."""


class RunRecord(TypedDict):
    """One ``workflowrun`` row with its nodes in file order (``Store.get_run``)."""

    id: int
    name: str
    status: str
    source: str | None
    source_path: str | None
    started_at: str
    finished_at: str | None
    duration: float | None
    idempotency_key: str | None
    retry_of: int | None
    """The run this one retries, if it is a retry."""
    duplicate_of: int | None
    definition: Any
    """The workflow document as stored (secrets redacted), or ``None``."""
    result_summary: RunSummary | None
    nodes: list[NodeRecord]


class RunListing(TypedDict):
    """One run as ``Store.list_runs`` lists it (``error``: its first error, if any)."""

    id: int
    name: str
    status: str
    source: str | None
    started_at: str | None
    finished_at: str | None
    duration: float | None
    error: str | None


class LinkedListing(RunListing):
    """A run as ``Store.page_runs`` lists it: a ``RunListing`` and the run it retries."""

    retry_of: int | None


class UnfinishedRun(TypedDict):
    """A RUNNING run (``Store.unfinished_runs``): whose file and process it was."""

    id: int
    source_path: str | None
    pid: int | None


class UnsettledRun(TypedDict):
    """A finished run whose result is not marked published (``Store.unsettled_runs``)."""

    id: int
    source_path: str


class CancelTarget(TypedDict):
    """The run a cancel request names, as found (``Store.request_cancel``)."""

    status: str
    pid: int | None


class CancelRequest(TypedDict):
    """A pending cancel request (``Store.cancel_requests``); ``status`` ``None``: no such run."""

    run_id: int
    status: str | None


def entry_of(row: NodeRecord) -> NodeEntry:
    """A node row as the result summary shows it."""
    return node_entry(
        row["type"],
        row["status"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration=row["duration"],
        output=row["result_data"],
        error=row["error"],
        reason=row["reason"],
    )


def summary_of(
    run: RunRecord, status: str | None = None, finished_at: str | None = None
) -> RunSummary:
    """The result summary of a run built from its rows (a RUNNING run's, live), with
    ``status`` and ``finished_at`` in place of the row's when given."""
    return build_summary(
        run_id=run["id"],
        workflow=run["name"],
        source=run["source"],
        status=run["status"] if status is None else status,
        started_at=run["started_at"],
        finished_at=run["finished_at"] if finished_at is None else finished_at,
        duration=run["duration"],
        nodes=((row["node_id"], entry_of(row)) for row in run["nodes"]),
        duplicate_of=run["duplicate_of"],
        retry_of=run["retry_of"],
    )


class RunEvent(TypedDict):
    """A run started (``status`` RUNNING) or ended (its final status)."""

    run_id: int
    workflow: str | None
    status: str
    started_at: str | None
    finished_at: str | None


class NodeEvent(TypedDict):
    """A node started (``status`` RUNNING) or reached its final status."""

    run_id: int
    node_id: str
    status: str
    attempts: int
    started_at: str | None
    finished_at: str | None
    error: str | None


class StoreEvent(NamedTuple):
    """One transition as the store queued it (``Store.watch``): ``kind`` says which shape."""

    kind: Literal["run", "node"]
    data: RunEvent | NodeEvent
