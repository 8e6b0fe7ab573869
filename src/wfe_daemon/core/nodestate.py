"""What is known of each node of a run, and which nodes a resumed run keeps. Pure.

The engine schedules with :class:`NodeState`; the result summary's node entries and the
trigger rules (:mod:`~wfe_daemon.core.rules`) read it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from wfe_daemon.core.masking import holds_mask
from wfe_daemon.core.model import NodeDef, NodeStatus, WorkflowDef, holds_redacted
from wfe_daemon.core.records import NodeRecord
from wfe_daemon.core.summary import NodeEntry, node_entry


@dataclass(slots=True)
class NodeState:
    """What is known of one node of a run; the summary is built from it."""

    node: NodeDef
    status: NodeStatus = NodeStatus.PENDING
    waiting: int = 0
    """Dependencies that have not reached a final status yet."""
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    duration: float | None = None
    output: Any = None
    """The output as shown (secrets redacted); references resolve against the raw one."""
    output_json: str | None = None
    """``output`` encoded, from the attempt that produced it until the store takes it."""
    error: str | None = None
    reason: str | None = None
    cause: str | None = None
    """For a node skipped because of a failure: the id of the node that failed."""
    started_perf: float = 0.0
    """``time.perf_counter()`` when the node first got a slot, taken with ``started_at``:
    the duration is measured on it, the wall clock only stamps."""

    @property
    def id(self) -> str:
        """The node's id (a :class:`~wfe_daemon.core.rules.Outcome`)."""
        return self.node.id

    @classmethod
    def from_row(cls, row: NodeRecord, node: NodeDef) -> NodeState:
        """A node's state from its ``noderun`` row (``Store.get_run``)."""
        return cls(
            node,
            status=NodeStatus(row["status"]),
            attempts=row["attempts"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            duration=row["duration"],
            output=row["result_data"],
            error=row["error"],
            reason=row["reason"],
            cause=row["cause"],
        )

    def entry(self) -> NodeEntry:
        """This node as the result summary shows it."""
        return node_entry(
            self.node.type,
            self.status.value,
            attempts=self.attempts,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration=self.duration,
            output=self.output,
            error=self.error,
            reason=self.reason,
        )


def reusable_states(
    workflow: WorkflowDef, rows: Iterable[NodeRecord], keep: Collection[NodeStatus]
) -> dict[str, NodeState]:
    """The nodes a resumed or retried run keeps as they were: those whose status is in ``keep``.

    A SUCCESS node whose stored output lost a secret to redaction or masking (``***``) is
    left out when a node still to run references it: it runs again (at-least-once), so
    that node gets the real value rather than ``***``.

    A node that was RUNNING keeps its count of attempts: the attempt a restart interrupted
    (running, or waiting its backoff after a failure) runs again under the same number, and
    the next ones follow it, so a node never gets more retries than it had left.
    """
    defs = {node.id: node for node in workflow.nodes}
    kept: dict[str, NodeState] = {}
    for row in rows:
        node = defs.get(row["node_id"])
        status = NodeStatus(row["status"])
        if node is None:
            continue
        if status in keep:
            kept[node.id] = NodeState.from_row(row, node)
        elif status is NodeStatus.RUNNING and row["attempts"] > 1:
            kept[node.id] = NodeState(node, attempts=row["attempts"] - 1)
    to_run = [
        node for node in workflow.nodes if node.id not in kept or not kept[node.id].status.is_final
    ]
    needed = {ref.node_id for node in to_run for ref in node.refs}
    for node_id in needed & kept.keys():
        output = kept[node_id].output
        if kept[node_id].status is NodeStatus.SUCCESS and (
            holds_redacted(output) or holds_mask(output)
        ):
            del kept[node_id]
    return kept
