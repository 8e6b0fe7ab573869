"""The store's multi-statement writes: plain functions run by the writer inside a batch.

Each takes the ``sqlite3.Connection`` of the writer's thread first (bind the rest with
``functools.partial``) and runs inside the batch's transaction; none commits.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from wfe_daemon.core.model import NodeStatus
from wfe_daemon.core.records import CancelTarget, NodeRecord
from wfe_daemon.core.rules import Ended, run_status
from wfe_daemon.core.summary import NodeEntry, RunSummary
from wfe_daemon.store.migrations import CAUSE, IDEMPOTENCY_FREE

NodeRows = Sequence[tuple[str, str]]


def dumps(value: Any) -> str:
    """JSON text for a summary column."""
    # orjson: a run's summary holds every node; the stdlib encoder took ~7 us a node here.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def touch(db: sqlite3.Connection) -> None:
    """A write that changes nothing: the schema version written again, so that its commit
    proves the file can be written now (a read-only file, a full disk)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    db.execute(f"PRAGMA user_version = {int(version)}")


def summary_text(summary: RunSummary) -> str:
    """JSON text of a run's summary as the database keeps it: each node's output is null.

    The outputs are stored once, in their node rows (``result_data``); a summary of a
    large output stored twice doubled the database and the memory it took to write it.
    :func:`restore_outputs` puts them back when the run is read.
    """
    nodes = summary.get("nodes")
    if not nodes:
        return dumps(summary)
    stripped: dict[str, NodeEntry] = {
        node_id: {**entry, "output": None} if "output" in entry else entry
        for node_id, entry in nodes.items()
    }
    return dumps({**summary, "nodes": stripped})


def restore_outputs(summary: RunSummary | None, nodes: Sequence[NodeRecord]) -> None:
    """Put the node rows' outputs (decoded ``result_data``) back into a stored summary."""
    # A summary stored by an older version may not be a JSON object.
    entries = summary.get("nodes") if isinstance(summary, dict) else None
    if not entries:
        return
    for row in nodes:
        entry = entries.get(row["node_id"])
        if entry is not None and "output" in entry:
            entry["output"] = row["result_data"]


def _key_holder(db: sqlite3.Connection, key: str) -> int | None:
    holder = db.execute(
        "SELECT id FROM workflowrun WHERE idempotency_key = ?"
        f" AND status NOT IN ({IDEMPOTENCY_FREE})",
        (key,),
    ).fetchone()
    return None if holder is None else int(holder[0])


def _insert_nodes(db: sqlite3.Connection, run_id: int, nodes: NodeRows) -> None:
    db.executemany(
        "INSERT INTO noderun (workflow_id, node_id, type, status) VALUES (?, ?, ?, 'PENDING')",
        ((run_id, node_id, node_type) for node_id, node_type in nodes),
    )


def insert_run(db: sqlite3.Connection, run_row: tuple[Any, ...], nodes: NodeRows) -> int:
    """A RUNNING run and its PENDING nodes; its id, or minus the id holding its key."""
    key = run_row[5]
    if key is not None and (holder := _key_holder(db, key)) is not None:
        return -holder
    cursor = db.execute(
        "INSERT INTO workflowrun (name, status, started_at, source, source_path,"
        " definition, idempotency_key, pid) VALUES (?, 'RUNNING', ?, ?, ?, ?, ?, ?)",
        run_row,
    )
    run_id = cursor.lastrowid
    assert run_id is not None
    _insert_nodes(db, run_id, nodes)
    return run_id


def insert_unrun(db: sqlite3.Connection, row: tuple[Any, ...], summary: RunSummary) -> int:
    """A run that never ran, its summary given the new id as ``run_id``; that id."""
    cursor = db.execute(
        "INSERT INTO workflowrun (name, status, started_at, finished_at, duration,"
        " source, source_path, duplicate_of, pid) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
        row,
    )
    assert cursor.lastrowid is not None
    summary["run_id"] = cursor.lastrowid
    db.execute(
        "UPDATE workflowrun SET result_summary = ? WHERE id = ?", (dumps(summary), cursor.lastrowid)
    )
    return cursor.lastrowid


def abandon_run(db: sqlite3.Connection, run_id: int, reason: str, finished_at: str) -> str:
    """Skip the run's unfinished nodes and end it as a run stopped by a failure ends
    (:func:`~wfe_daemon.core.rules.run_status`: FAILED or PARTIAL_SUCCESS); that status."""
    db.execute(
        "UPDATE noderun SET status = 'SKIPPED', reason = ?"
        " WHERE workflow_id = ? AND status IN ('PENDING', 'RUNNING')",
        (reason, run_id),
    )
    # One row per kind of outcome is all the rule needs, not one per node.
    outcomes = db.execute(
        f"SELECT MIN(node_id), status, MIN({CAUSE}) FROM noderun WHERE workflow_id = ?"
        f" GROUP BY status, {CAUSE} IS NULL",
        (run_id,),
    )
    nodes = (Ended(node_id, NodeStatus(status), cause) for node_id, status, cause in outcomes)
    status = str(run_status(nodes, stopped=NodeStatus.FAILED))
    db.execute(
        "UPDATE workflowrun SET status = ?, finished_at = ?, settled_at = ? WHERE id = ?",
        (status, finished_at, finished_at, run_id),
    )
    return status


def request_cancel(db: sqlite3.Connection, run_id: int, requested_at: str) -> CancelTarget | None:
    """A cancel request for a RUNNING run; the run's ``status`` and ``pid``, if it exists."""
    row = db.execute("SELECT status, pid FROM workflowrun WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    if row[0] == "RUNNING":
        db.execute(
            "INSERT OR IGNORE INTO cancel_request (run_id, requested_at) VALUES (?, ?)",
            (run_id, requested_at),
        )
    return {"status": row[0], "pid": row[1]}


def take_cancel_request(db: sqlite3.Connection, run_id: int) -> bool:
    """Delete a run's cancel request; whether there was one."""
    cursor = db.execute("DELETE FROM cancel_request WHERE run_id = ?", (run_id,))
    return cursor.rowcount > 0


def insert_retry(
    db: sqlite3.Connection,
    run_row: tuple[Any, ...],
    nodes: NodeRows,
    reused_reason: str,
) -> int:
    """A RUNNING run retrying ``run_row[5]``, reusing its SUCCESS nodes; its id.

    ``run_row`` is ``(name, started_at, source, source_path, definition, idempotency_key,
    retry_of)``; the key is dropped when another run holds it.
    """
    name, started_at, source, source_path, definition, key, retry_of = run_row
    if key is not None and _key_holder(db, key) is not None:
        key = None
    cursor = db.execute(
        "INSERT INTO workflowrun (name, status, started_at, source, source_path, definition,"
        " idempotency_key, retry_of, pid) VALUES (?, 'RUNNING', ?, ?, ?, ?, ?, ?, ?)",
        (name, started_at, source, source_path, definition, key, retry_of, os.getpid()),
    )
    run_id = cursor.lastrowid
    assert run_id is not None
    _insert_nodes(db, run_id, nodes)
    db.execute(
        "UPDATE noderun AS new SET status = old.status, started_at = old.started_at,"
        " finished_at = old.finished_at, duration = old.duration,"
        " attempts = old.attempts, result_data = old.result_data, reason = ?"
        " FROM noderun AS old WHERE new.workflow_id = ? AND old.workflow_id = ?"
        " AND old.node_id = new.node_id AND old.type = new.type"
        " AND old.status = 'SUCCESS'",
        (reused_reason, run_id, retry_of),
    )
    return run_id


def prune_batch(db: sqlite3.Connection, before: str, batch: int) -> tuple[int, int]:
    """Delete up to ``batch`` prunable runs with their nodes; ``(runs, nodes)`` deleted."""
    # started_at <= finished_at: the started_at index finds the candidates. A run
    # whose result is not published yet is kept: recovery still needs it.
    ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM workflowrun WHERE started_at < ?1 AND finished_at < ?1"
            " AND status != 'RUNNING' AND (settled_at IS NOT NULL OR source_path IS NULL)"
            " LIMIT ?2",
            (before, batch),
        )
    ]
    if not ids:
        return 0, 0
    marks = ",".join("?" * len(ids))
    db.execute(f"UPDATE workflowrun SET retry_of = NULL WHERE retry_of IN ({marks})", ids)
    nodes = db.execute(f"DELETE FROM noderun WHERE workflow_id IN ({marks})", ids).rowcount
    runs = db.execute(f"DELETE FROM workflowrun WHERE id IN ({marks})", ids).rowcount
    return runs, nodes
