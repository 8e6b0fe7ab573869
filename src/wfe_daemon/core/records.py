"""The rows the store returns, as typed shapes. Pure.

They are ``TypedDict``s rather than dataclasses: the store makes them from SQLite rows
without a copy, ``show --json`` and ``runs --json`` print them as they are, and ``views``
reads them as plain data; a dataclass would add a conversion at each of those edges.
"""

from __future__ import annotations

from typing import Any, TypedDict

from wfe_daemon.core.summary import RunSummary


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
    definition: Any
    """The workflow document as stored (secrets redacted), or ``None``."""
    result_summary: RunSummary | None
    retry_of: int | None
    """The run this one retries, if it is a retry."""
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
