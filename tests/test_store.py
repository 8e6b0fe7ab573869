"""Tests for the run history: rows that match the summary, schema versions and migrations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from wfe_daemon.errors import StoreError
from wfe_daemon.store.database import MIGRATIONS, SCHEMA_VERSION, Store

Cli = Callable[..., subprocess.CompletedProcess[str]]
Rows = Callable[..., list[dict[str, Any]]]
Writer = Callable[..., Path]

OLD_SUMMARY = {"run_id": 1, "workflow": "legacy", "status": "SUCCESS", "nodes": {}, "errors": []}


def make_v1_database(path: Path) -> None:
    """A database as schema version 1 left it: the design's two tables and one finished run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO workflowrun (id, name, status, started_at, finished_at, duration,"
            " result_summary) VALUES (1, 'legacy', 'SUCCESS', '2024-01-01T00:00:00+00:00',"
            " '2024-01-01T00:00:01+00:00', 1.0, ?)",
            (json.dumps(OLD_SUMMARY),),
        )
        conn.execute(
            "INSERT INTO noderun (workflow_id, node_id, type, status, started_at, finished_at,"
            " duration, result_data) VALUES (1, 'a', 'echo', 'SUCCESS',"
            " '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:01+00:00', 1.0, '{\"x\": 1}')"
        )
        conn.commit()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    """The schema version recorded in the file."""
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


def test_rows_match_the_printed_summary(run_cli: Cli, write_workflow: Writer, sql: Rows) -> None:
    """workflowrun and noderun hold what the summary shows: statuses, attempts, times, and
    the outputs once, in the node rows."""
    path = write_workflow(
        {
            "name": "rows",
            "nodes": [
                {"id": "ok", "type": "echo", "params": {"n": 1, "list": [1, 2]}},
                {
                    "id": "slow",
                    "type": "sleep",
                    "params": {"seconds": 5},
                    "timeout": 0.1,
                    "retries": 1,
                    "retry_delay": 0.05,
                },
                {"id": "skipped", "type": "echo", "depends_on": ["slow"]},
                {"id": "nap", "type": "sleep", "params": {"seconds": 0.1}, "depends_on": ["ok"]},
            ],
        },
        "rows.json",
    )

    result = run_cli("execute", path)

    summary = json.loads(result.stdout)
    assert summary["status"] == "PARTIAL_SUCCESS"
    (run,) = sql("SELECT * FROM workflowrun")
    assert run["id"] == summary["run_id"]
    assert (run["name"], run["status"], run["source"]) == ("rows", summary["status"], "rows.json")
    for key in ("started_at", "finished_at", "duration"):
        assert run[key] == summary[key]
    stored = json.loads(run["result_summary"])  # outputs are kept once, in the node rows
    for node_id, entry in summary["nodes"].items():
        if "output" in entry:
            assert stored["nodes"][node_id].pop("output") is None
            entry = {key: value for key, value in entry.items() if key != "output"}
        assert stored["nodes"][node_id] == entry
    assert {**stored, "nodes": None} == {**summary, "nodes": None}
    assert json.loads(run["definition"]) == json.loads(path.read_bytes())

    rows = {
        row["node_id"]: row
        for row in sql("SELECT * FROM noderun WHERE workflow_id = ?", summary["run_id"])
    }
    assert set(rows) == set(summary["nodes"])
    for node_id, entry in summary["nodes"].items():
        row = rows[node_id]
        assert (row["type"], row["status"]) == (entry["type"], entry["status"])
        assert row["attempts"] == entry.get("attempts", 0)
        for key in ("started_at", "finished_at", "duration", "error", "reason"):
            assert row[key] == entry.get(key), (node_id, key)
        output = None if row["result_data"] is None else json.loads(row["result_data"])
        assert output == entry.get("output"), node_id
    assert rows["slow"]["attempts"] == 2
    assert rows["ok"]["result_data"] is not None
    assert rows["ok"]["duration"] >= 0
    assert rows["nap"]["duration"] >= 0.1


async def test_store_opens_in_wal_mode_at_the_current_schema_version(db_path: Path) -> None:
    """A new database is created in WAL mode with user_version = SCHEMA_VERSION."""
    async with Store.open(db_path):
        pass

    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert user_version(db_path) == SCHEMA_VERSION


async def test_version_1_database_is_migrated_and_old_rows_stay_readable(db_path: Path) -> None:
    """Store.open migrates a v1 file forward; its old run reads back through get_run."""
    make_v1_database(db_path)

    async with Store.open(db_path) as store:
        run = await store.get_run(1)
        listed = await store.list_runs()
        new_id = await store.create_run(
            name="new", started_at="2024-01-02T00:00:00+00:00", nodes=[("a", "echo")]
        )

    assert user_version(db_path) == SCHEMA_VERSION
    assert run is not None
    assert (run["name"], run["status"], run["duration"]) == ("legacy", "SUCCESS", 1.0)
    assert run["result_summary"] == OLD_SUMMARY
    assert run["definition"] is None
    assert [(n["node_id"], n["status"], n["attempts"], n["result_data"]) for n in run["nodes"]] == [
        ("a", "SUCCESS", 0, {"x": 1})
    ]
    assert [r["id"] for r in listed] == [1]
    assert new_id == 2


def test_version_1_database_is_migrated_by_the_cli(
    run_cli: Cli, write_workflow: Writer, db_path: Path
) -> None:
    """``execute`` migrates an old database and adds to it; ``runs --json`` and ``show`` then
    read its old run (read commands never migrate: see test_store_reads)."""
    make_v1_database(db_path)

    executed = run_cli(
        "execute", write_workflow({"name": "new", "nodes": [{"id": "a", "type": "echo"}]})
    )
    runs = run_cli("runs", "--json")
    shown = run_cli("show", "1", "--json")

    assert runs.returncode == 0, runs.stderr
    assert [(r["run_id"], r["workflow"], r["status"]) for r in json.loads(runs.stdout)] == [
        (2, "new", "SUCCESS"),
        (1, "legacy", "SUCCESS"),
    ]
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["result_summary"] == OLD_SUMMARY
    assert executed.returncode == 0, executed.stderr
    assert json.loads(executed.stdout)["run_id"] == 2
    assert user_version(db_path) == SCHEMA_VERSION


def _make_future_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    finally:
        conn.close()


async def test_newer_schema_version_is_refused(db_path: Path) -> None:
    """A database from a newer program raises StoreError naming both versions."""
    _make_future_database(db_path)

    with pytest.raises(StoreError, match=f"{SCHEMA_VERSION + 1}.*newer.*{SCHEMA_VERSION}"):
        async with Store.open(db_path):
            pass
    assert user_version(db_path) == SCHEMA_VERSION + 1


def test_newer_schema_version_exits_1_with_one_line(run_cli: Cli, db_path: Path) -> None:
    """The CLI reports a database from a newer program in one line and exits 1."""
    _make_future_database(db_path)

    result = run_cli("runs")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "newer" in result.stderr


def test_unopenable_database_exits_1_with_one_line(run_cli: Cli, tmp_path: Path) -> None:
    """A db_path that is a directory gives a one-line StoreError, exit 1."""
    (tmp_path / "adir").mkdir()

    result = run_cli("runs", env={"WFE_DB_PATH": str(tmp_path / "adir")})

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "database" in result.stderr


def _open_and_close(path: Path, start: threading.Barrier, errors: list[BaseException]) -> None:
    async def open_store() -> None:
        async with Store.open(path):
            pass

    start.wait()
    try:
        asyncio.run(open_store())
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


@pytest.mark.parametrize("round_", range(20))  # the switch to WAL raced in ~5 % of rounds
def test_concurrent_opens_of_a_fresh_file_all_migrate_it_once(tmp_path: Path, round_: int) -> None:
    """Several connections opening one new file at once all succeed; the schema is built once."""
    path = tmp_path / f"race-{round_}.db"
    start = threading.Barrier(6)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_open_and_close, args=(path, start, errors)) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert user_version(path) == SCHEMA_VERSION


@contextmanager
def write_locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock until the block ends (then it commits)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` on the loop until it holds."""
    for _ in range(round(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still false after {timeout_s}s")


def node_rows(path: Path, run_id: int) -> dict[str, tuple[Any, ...]]:
    """``node_id -> (status, attempts)`` of one run, read by a fresh connection."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT node_id, status, attempts FROM noderun WHERE workflow_id = ?", (run_id,)
        ).fetchall()
    finally:
        conn.close()
    return {node_id: (status, attempts) for node_id, status, attempts in rows}


def finish(store: Store, run_id: int, node_id: str, attempts: int = 1) -> None:
    """Queue a SUCCESS for one node."""
    store.node_finished(
        run_id,
        node_id,
        status="SUCCESS",
        started_at="2024-01-01T00:00:00+00:00",
        finished_at="2024-01-01T00:00:01+00:00",
        duration=1.0,
        attempts=attempts,
    )


async def test_a_steady_trickle_of_writes_shares_transactions(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node writes queued one per loop turn, as a chain queues them, are committed in
    batches gathered for ``_GATHER_S`` each, not in one batch per round trip to SQLite."""
    import time

    from wfe_daemon.store import writequeue

    batches = 0
    apply = writequeue._apply

    def counted(*args: Any) -> list[Any]:
        nonlocal batches
        batches += 1
        return apply(*args)

    monkeypatch.setattr(writequeue, "_apply", counted)
    nodes = [(f"n{i}", "echo") for i in range(300)]
    async with Store.open(db_path) as store:
        run_id = await store.create_run(
            name="w", started_at="2024-01-01T00:00:00+00:00", nodes=nodes
        )
        batches = 0
        began = time.perf_counter()
        for node_id, _type in nodes:
            store.node_running(run_id, node_id, "2024-01-01T00:00:00+00:00", 1)
            finish(store, run_id, node_id)
            time.sleep(100e-6)  # noqa: ASYNC251 - a node's work, without the GIL: 30 ms or more
            await asyncio.sleep(0)
        await store.flush()
        elapsed_s = time.perf_counter() - began
    assert batches <= elapsed_s / writequeue._GATHER_S + 1
    assert set(node_rows(db_path, run_id).values()) == {("SUCCESS", 1)}


async def test_a_batch_that_fails_on_a_lock_is_retried_before_later_writes(db_path: Path) -> None:
    """Writes queued while another connection holds the lock past the busy timeout are all
    committed once it lets go, the failed batch before anything queued after it; the store
    reports unhealthy meanwhile and a flush waiting through the outage succeeds."""
    async with Store.open(db_path, busy_timeout_s=0.02) as store:
        run_id = await store.create_run(
            name="w",
            started_at="2024-01-01T00:00:00+00:00",
            nodes=[("a", "echo"), ("b", "echo"), ("c", "echo")],
        )
        with write_locked(db_path):
            store.node_running(run_id, "a", "2024-01-01T00:00:00+00:00", 1)
            store.node_running(run_id, "b", "2024-01-01T00:00:00+00:00", 1)
            await wait_for(lambda: not store.healthy)  # the batch with both has failed
            finish(store, run_id, "a")  # queued after the failed batch: must land after it
            store.node_running(run_id, "c", "2024-01-01T00:00:00+00:00", 2)
            flushed = asyncio.create_task(store.flush())
            await asyncio.sleep(0.3)  # several retries, all failing
            assert not store.healthy
            assert not flushed.done()
        await flushed
        assert store.healthy

    assert node_rows(db_path, run_id) == {
        "a": ("SUCCESS", 1),
        "b": ("RUNNING", 1),
        "c": ("RUNNING", 2),
    }


async def test_waiting_callers_fail_after_give_up_but_queued_events_are_kept(
    db_path: Path,
) -> None:
    """A create_run waiting through a lock raises StoreError only after ``give_up_s`` and never
    runs later, while the node events queued beside it are still written after the release."""
    async with Store.open(db_path, busy_timeout_s=0.02, give_up_s=0.3) as store:
        run_id = await store.create_run(
            name="w", started_at="2024-01-01T00:00:00+00:00", nodes=[("a", "echo"), ("b", "echo")]
        )
        with write_locked(db_path):
            store.node_running(run_id, "a", "2024-01-01T00:00:00+00:00", 1)
            store.node_running(run_id, "b", "2024-01-01T00:00:00+00:00", 1)
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreError, match="database write failed"):
                await store.create_run(
                    name="lost", started_at="2024-01-01T00:00:00+00:00", nodes=[]
                )
            assert asyncio.get_running_loop().time() - started >= 0.3
            finish(store, run_id, "a", attempts=3)
        await store.flush()
        runs = await store.list_runs()

    assert [run["name"] for run in runs] == ["w"]
    assert node_rows(db_path, run_id) == {"a": ("SUCCESS", 3), "b": ("RUNNING", 1)}
