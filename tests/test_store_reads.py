"""Read commands (``runs``, ``show``, ``graph RUN_ID``) open the database read-only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from test_store import Cli, make_v1_database, user_version
from test_store import Writer as WorkflowWriter
from test_store_faults import lock_held

HELLO = {
    "name": "hello",
    "nodes": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo", "depends_on": ["a"]}],
}


@pytest.mark.parametrize("begin", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_read_commands_do_not_wait_for_a_write_lock_held_elsewhere(
    run_cli: Cli, write_workflow: WorkflowWriter, db_path: Path, begin: str
) -> None:
    """While another process holds the write lock, ``runs``, ``show`` and ``graph RUN_ID``
    answer with the committed runs (bounded by the subprocess timeout, not by a clock)."""
    assert run_cli("execute", write_workflow(HELLO)).returncode == 0

    with lock_held(db_path, begin):
        runs = run_cli("runs", "--json")
        shown = run_cli("show", "1", "--json")
        graph = run_cli("graph", "1")

    assert runs.returncode == 0, runs.stderr
    assert [(r["run_id"], r["status"]) for r in json.loads(runs.stdout)] == [(1, "SUCCESS")]
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "hello"
    assert graph.returncode == 0, graph.stderr
    assert "a --> b" in graph.stdout


def test_a_database_not_in_wal_mode_locked_elsewhere_is_one_clear_line(
    run_cli: Cli, write_workflow: WorkflowWriter, db_path: Path
) -> None:
    """A database in rollback-journal mode (a copy restored from a backup, say) blocks
    readers while another process writes to it: ``runs`` gives up after a short wait,
    in one line saying the database is locked, exit 1."""
    assert run_cli("execute", write_workflow(HELLO)).returncode == 0
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()

    with lock_held(db_path, "BEGIN EXCLUSIVE"):
        result = run_cli("runs")

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert "is locked by another process" in result.stderr


def test_read_commands_on_a_missing_database_create_nothing(run_cli: Cli, db_path: Path) -> None:
    """With no database yet, ``runs`` lists no runs and says where it looked, ``show`` says
    there is no such run, and neither creates the file."""
    runs = run_cli("runs", "--json")
    shown = run_cli("show", "1")

    assert runs.returncode == 0
    assert json.loads(runs.stdout) == []
    assert f"no database at {db_path} yet" in runs.stderr
    assert shown.returncode == 1
    assert "no run 1" in shown.stderr
    assert not db_path.exists() and not db_path.parent.exists()


def test_read_commands_on_an_older_schema_say_so_and_leave_it(run_cli: Cli, db_path: Path) -> None:
    """A database of an older schema is not migrated by ``runs``: one line says so and how
    it gets migrated, exit 1, and the file keeps its version."""
    make_v1_database(db_path)

    result = run_cli("runs")

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert "schema version 1, older" in result.stderr
    assert user_version(db_path) == 1


def test_cancel_still_writes_its_request(run_cli: Cli, db_path: Path) -> None:
    """``cancel`` opens the database for writing: for no such run it says so, exit 1."""
    result = run_cli("cancel", "7")

    assert result.returncode == 1
    assert "no run 7" in result.stderr
    assert db_path.exists()
