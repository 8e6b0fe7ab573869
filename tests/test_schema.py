"""Tests for the forward migrations of wfe_daemon.store.migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wfe_daemon.store.database import Store
from wfe_daemon.store.migrations import MIGRATIONS, SCHEMA_VERSION

# Reasons a node row may hold, and the cause the migration to version 4 takes from each.
REASONS = {
    "failed": ("SKIPPED", "dependency failed: load_1", "load_1"),
    "deep": ("SKIPPED", "dependency failed: x: y", "x: y"),
    "skipped": ("SKIPPED", "dependency skipped: b", None),
    "rule": ("SKIPPED", "trigger rule one_failed: no dependency failed", None),
    "shouted": ("SKIPPED", "DEPENDENCY FAILED: q", None),
    "wildcard": ("SKIPPED", "dependency_failed: q", None),
    "reused": ("SUCCESS", "output reused from run 1", None),
    "plain": ("SUCCESS", None, None),
}


def _make_v3_database(path: Path) -> None:
    """A database as schema version 3 left it, with one finished run and its nodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        for migration in MIGRATIONS[:3]:
            conn.executescript(migration)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO workflowrun (id, name, status, started_at)"
            " VALUES (1, 'old', 'PARTIAL_SUCCESS', '2024-01-01T00:00:00+00:00')"
        )
        conn.executemany(
            "INSERT INTO noderun (workflow_id, node_id, type, status, reason)"
            " VALUES (1, ?, 'echo', ?, ?)",
            [(node_id, status, reason) for node_id, (status, reason, _) in REASONS.items()],
        )
        conn.commit()
    finally:
        conn.close()


async def test_the_cause_of_an_old_skip_is_taken_from_its_reason(db_path: Path) -> None:
    """Migrating to version 4 fills ``cause`` from reasons that start exactly with
    ``dependency failed: ``, and leaves every other row's ``cause`` empty."""
    _make_v3_database(db_path)

    async with Store.open(db_path) as store:
        run = await store.get_run(1)

    assert SCHEMA_VERSION >= 4  # through version 4 and every migration after it
    assert run is not None
    assert {row["node_id"]: row["cause"] for row in run["nodes"]} == {
        node_id: cause for node_id, (_, _, cause) in REASONS.items()
    }
    assert {row["node_id"]: row["reason"] for row in run["nodes"]} == {
        node_id: reason for node_id, (_, reason, _) in REASONS.items()
    }


async def test_a_skips_cause_is_stored_and_read_back(db_path: Path) -> None:
    """``node_finished`` stores a skip's cause; ``get_run`` returns it with the row."""
    async with Store.open(db_path) as store:
        run_id = await store.create_run(
            name="w", started_at="2024-01-01T00:00:00+00:00", nodes=[("a", "echo"), ("b", "echo")]
        )
        store.node_finished(
            run_id,
            "b",
            status="SKIPPED",
            started_at=None,
            finished_at=None,
            duration=None,
            attempts=0,
            reason="dependency failed: a",
            cause="a",
        )
        await store.flush()
        run = await store.get_run(run_id)

    assert run is not None
    assert [(row["node_id"], row["cause"]) for row in run["nodes"]] == [("a", None), ("b", "a")]


async def test_a_skip_written_without_its_cause_is_read_with_it(db_path: Path) -> None:
    """A row a daemon of schema 3 writes after a newer command migrated the file has no
    ``cause``: it is read from the reason, as the migration would have."""
    _make_v3_database(db_path)
    async with Store.open(db_path):
        pass  # migrated to version 4
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(
            "INSERT INTO noderun (workflow_id, node_id, type, status, reason)"
            " VALUES (1, 'late', 'echo', 'SKIPPED', 'dependency failed: load_1')"
        )
        conn.commit()
    finally:
        conn.close()

    async with Store.open(db_path) as store:
        run = await store.get_run(1)

    assert run is not None
    assert {row["node_id"]: row["cause"] for row in run["nodes"]}["late"] == "load_1"
