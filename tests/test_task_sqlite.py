"""save_db on real SQLite files, directly, through the engine and through the CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wfe_daemon.config import Settings
from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.task import Services, TaskContext
from wfe_daemon.service.submission import submit
from wfe_daemon.tasks.sqlite import SaveDbTask

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data_dir of the test (the same folder ``engine_factory`` and ``run_cli`` use)."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    return folder


def context(data_dir: Path) -> TaskContext:
    """A task context whose data_dir is ``data_dir``."""
    return TaskContext(1, "test", "node", 1, Settings(data_dir=data_dir), Services())


def rows_of(database: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, in insertion order."""
    conn = sqlite3.connect(database)
    try:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
    finally:
        conn.close()


def write_rows(path: Path, count: int, tag: str = "r") -> None:
    """A CSV of ``count`` rows ``(id, name)``."""
    path.write_text("id,name\n" + "".join(f"{i},{tag}{i}\n" for i in range(count)))


async def run_doc(engine: Engine, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Run a workflow of ``nodes`` through the engine; return its summary."""
    doc = {"name": "sqlite test", "nodes": nodes}
    data = json.dumps(doc).encode()
    return await submit(
        data, registry=engine.registry, store=engine.store, engine=engine, source="test.json"
    )


def save(**params: Any) -> dict[str, Any]:
    """A save_db node called ``s``, loading ``in.csv`` into ``out.db`` table ``sales``."""
    return {
        "id": "s",
        "type": "save_db",
        "params": {"source": "in.csv", "database": "out.db", "table": "sales", **params},
    }


async def test_loads_rows_into_a_new_table_of_text_columns(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """A new table gets the header's columns, TEXT typed, and exactly the file's rows."""
    (data / "in.csv").write_text("id,region,amount\n1,north,12.5\n2,south,7\n")
    summary = await run_doc(engine_factory(), [save()])
    assert summary["nodes"]["s"]["output"] == {
        "database": "out.db",
        "table": "sales",
        "rows_written": 2,
    }
    assert rows_of(data / "out.db", "sales") == [("1", "north", "12.5"), ("2", "south", "7")]
    conn = sqlite3.connect(data / "out.db")
    try:
        declared = [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(sales)")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert declared == [("id", "TEXT"), ("region", "TEXT"), ("amount", "TEXT")]
    assert mode == "wal"


async def test_append_adds_rows_and_replace_swaps_them(data: Path) -> None:
    """append keeps the old rows (any column order); replace leaves only the new ones."""
    task, ctx = SaveDbTask(), context(data)
    (data / "in.csv").write_text("id,name\n1,a\n")
    await task.execute({"source": "in.csv", "database": "db/x.db", "table": "t"}, ctx)
    (data / "in.csv").write_text("name,id\nb,2\n")
    await task.execute({"source": "in.csv", "database": "db/x.db", "table": "t"}, ctx)
    assert rows_of(data / "db" / "x.db", "t") == [("1", "a"), ("2", "b")]
    out = await task.execute(
        {"source": "in.csv", "database": "db/x.db", "table": "t", "mode": "replace"}, ctx
    )
    assert out["rows_written"] == 1
    assert rows_of(data / "db" / "x.db", "t") == [("b", "2")]


async def test_append_to_a_table_with_other_columns_fails(data: Path) -> None:
    """append refuses a file whose header does not match the existing table."""
    task, ctx = SaveDbTask(), context(data)
    (data / "in.csv").write_text("id,name\n1,a\n")
    await task.execute({"source": "in.csv", "database": "x.db", "table": "t"}, ctx)
    (data / "in.csv").write_text("id,email\n2,b@c\n")
    with pytest.raises(TaskFailed, match="table 't' has columns id, name; the file has id, email"):
        await task.execute({"source": "in.csv", "database": "x.db", "table": "t"}, ctx)


async def test_a_file_that_is_not_a_database_fails_clearly(data: Path) -> None:
    """SQLite's own complaint reaches the error, without the driver's status prefix."""
    (data / "in.csv").write_text("id\n1\n")
    (data / "x.db").write_bytes(b"not sqlite " * 100)
    with pytest.raises(TaskFailed) as failed:
        await SaveDbTask().execute(
            {"source": "in.csv", "database": "x.db", "table": "t"}, context(data)
        )
    assert str(failed.value).startswith("x.db: ")
    assert str(failed.value).endswith("file is not a database")
    assert "[SQLite]" not in str(failed.value) and "INVALID_ARGUMENT" not in str(failed.value)
    assert (data / "x.db").read_bytes() == b"not sqlite " * 100


async def test_a_bad_row_rolls_the_whole_load_back(data: Path) -> None:
    """A ragged row fails the node with its line, and no row of that load is kept."""
    task, ctx = SaveDbTask(), context(data)
    write_rows(data / "in.csv", 3)
    await task.execute({"source": "in.csv", "database": "x.db", "table": "t"}, ctx)
    write_rows(data / "in.csv", 10_000, tag="new")
    with (data / "in.csv").open("a") as f:
        f.write("1,2,3\n")
    with pytest.raises(TaskFailed, match=r"in.csv: line 10002: 3 fields, the header has 2"):
        await task.execute(
            {"source": "in.csv", "database": "x.db", "table": "t", "mode": "replace"}, ctx
        )
    assert rows_of(data / "x.db", "t") == [("0", "r0"), ("1", "r1"), ("2", "r2")]


@pytest.mark.parametrize(
    "table", ["sales; DROP TABLE x", 'sales"--', "1sales", "a" * 65, "sqlite_master", ""]
)
async def test_unsafe_table_names_are_refused(data: Path, table: str) -> None:
    """Table names that are not plain identifiers never reach SQL."""
    (data / "in.csv").write_text("id\n1\n")
    with pytest.raises(TaskFailed, match="table"):
        await SaveDbTask().execute(
            {"source": "in.csv", "database": "x.db", "table": table}, context(data)
        )
    assert not (data / "x.db").exists()


async def test_injected_table_name_and_bad_mode_fail_the_node(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """Given literally they reject the workflow; arriving through a reference, the node FAILS."""
    (data / "in.csv").write_text("id\n1\n")
    engine = engine_factory()
    summary = await run_doc(engine, [save(table="sales; DROP TABLE x")])
    assert summary["status"] == "REJECTED"
    assert "sales; DROP TABLE x" in json.dumps(summary["errors"])
    summary = await run_doc(engine, [save(mode="upsert")])
    assert summary["status"] == "REJECTED"
    assert "upsert" in json.dumps(summary["errors"])

    names = {
        "id": "names",
        "type": "echo",
        "params": {"table": "sales; DROP TABLE x", "mode": "upsert"},
    }
    for bad in ({"table": "{{ names.table }}"}, {"mode": "{{ names.mode }}"}):
        summary = await run_doc(engine, [names, {**save(**bad), "depends_on": ["names"]}])
        node = summary["nodes"]["s"]
        assert node["status"] == "FAILED"
        assert (
            "'sales; DROP TABLE x' does not match" in node["error"]
            if "table" in bad
            else "'upsert' is not one of" in node["error"]
        )
    assert not (data / "out.db").exists()


async def test_bad_column_names_in_the_header_fail(data: Path) -> None:
    """A header column that is not an identifier, or repeats another ignoring case, fails."""
    task, ctx = SaveDbTask(), context(data)
    (data / "in.csv").write_text('id,"x"" TEXT); DROP TABLE t; --"\n1,2\n')
    with pytest.raises(TaskFailed, match=r"in.csv: column 'x\" TEXT.*is not a valid name"):
        await task.execute({"source": "in.csv", "database": "x.db", "table": "t"}, ctx)
    (data / "in.csv").write_text("id,ID\n1,2\n")
    with pytest.raises(TaskFailed, match="'ID' appears twice"):
        await task.execute({"source": "in.csv", "database": "x.db", "table": "t"}, ctx)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"source": "missing.csv"}, "missing.csv: no such file in data_dir"),
        ({"source": "../in.csv"}, "source: '../in.csv' uses '..'"),
        ({"database": "/tmp/x.db"}, "database: '/tmp/x.db' is absolute"),
        ({"database": "link/x.db"}, "through a symlink"),
    ],
)
async def test_missing_source_and_escaping_paths_fail_the_node(
    engine_factory: Callable[..., Engine],
    data: Path,
    tmp_path: Path,
    params: dict[str, str],
    expected: str,
) -> None:
    """A missing CSV and a path leading out of data_dir are FAILED nodes with clear errors."""
    (data / "in.csv").write_text("id\n1\n")
    (data / "link").symlink_to(tmp_path)
    summary = await run_doc(engine_factory(), [save(**params)])
    assert summary["nodes"]["s"]["status"] == "FAILED"
    assert expected in summary["nodes"]["s"]["error"]


def test_replace_is_atomic_for_a_concurrent_reader(data: Path) -> None:
    """A reader polling count(*) during a replace sees only the old or the new row count."""
    old, new = 1_000, 60_000
    write_rows(data / "in.csv", old)
    task, ctx = SaveDbTask(), context(data)
    params = {"source": "in.csv", "database": "x.db", "table": "t", "mode": "replace"}
    asyncio.run(task.execute(params, ctx))
    write_rows(data / "in.csv", new, tag="n")
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        conn = sqlite3.connect(data / "x.db", timeout=10)
        try:
            while not stop.is_set():
                seen.append(conn.execute("SELECT count(*) FROM t").fetchone()[0])
        finally:
            conn.close()

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(3):
            asyncio.run(task.execute(params, ctx))
    finally:
        stop.set()
        reader.join(10)
    assert set(seen) <= {old, new}, sorted(set(seen))
    assert old in seen
    assert new in seen
    assert len(seen) > 10


# -- the whole pipeline through the CLI -----------------------------------------------------

SALES = (
    "id,date,region,amount,note\n"
    "1,2024-01-05, North ,12.50,paid\n"
    "2,2024-01-06,south,0,\n"
    "3,2024-01-07,EAST,7.25,rush\n"
    "4,2024-01-08,north,-3,refund\n"
)


def _pipeline(mode: str) -> dict[str, Any]:
    return {
        "name": "sales pipeline",
        "nodes": [
            {
                "id": "check",
                "type": "validate_csv",
                "params": {
                    "path": "raw/sales.csv",
                    "required_columns": ["id", "amount"],
                    "types": {"id": "int", "date": "date", "amount": "float"},
                },
            },
            {
                "id": "clean",
                "type": "transform_simple",
                "depends_on": ["check"],
                "params": {
                    "input": "{{ check.path }}",
                    "output": "clean/sales.csv",
                    "filter": [{"column": "amount", "op": "gt", "value": 0}],
                    "strip": ["region"],
                    "lowercase": ["region"],
                    "cast": {"amount": "float"},
                    "select": ["id", "region", "amount"],
                    "rename": {"amount": "amount_eur"},
                },
            },
            {
                "id": "load",
                "type": "save_db",
                "depends_on": ["clean"],
                "params": {
                    "source": "{{ clean.path }}",
                    "database": "db/sales.db",
                    "table": "sales",
                    "mode": mode,
                },
            },
        ],
    }


def test_cli_pipeline_loads_exact_rows_and_replace_keeps_them(
    run_cli: Cli, write_workflow: Callable[..., Path], data: Path
) -> None:
    """validate -> transform -> save_db via `execute` loads the rows; a replace rerun keeps them."""
    (data / "raw").mkdir()
    (data / "raw" / "sales.csv").write_text(SALES)
    expected = [("1", "north", "12.5"), ("3", "east", "7.25")]
    for mode in ("append", "replace"):
        result = run_cli("execute", write_workflow(_pipeline(mode), name=f"{mode}.json"))
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "SUCCESS"
        nodes = summary["nodes"]
        assert nodes["check"]["output"]["row_count"] == 4
        assert nodes["clean"]["output"] == {"path": "clean/sales.csv", "rows_in": 4, "rows_out": 2}
        assert nodes["load"]["output"] == {
            "database": "db/sales.db",
            "table": "sales",
            "rows_written": 2,
        }
        assert rows_of(data / "db" / "sales.db", "sales") == expected


def test_cli_pipeline_stops_at_an_invalid_row(
    run_cli: Cli, write_workflow: Callable[..., Path], data: Path
) -> None:
    """A bad typed value fails validation with its line; later nodes are skipped, exit 1."""
    (data / "raw").mkdir()
    (data / "raw" / "sales.csv").write_text(SALES.replace("7.25", "7,25"))
    result = run_cli("execute", write_workflow(_pipeline("replace")))
    assert result.returncode == 1
    nodes = json.loads(result.stdout)["nodes"]
    assert nodes["check"]["status"] == "FAILED"
    assert "line 4" in nodes["check"]["error"]
    assert nodes["load"]["status"] == "SKIPPED"
    assert not (data / "db").exists()


# -- the daemon's own database ----------------------------------------------------------------


@pytest.mark.parametrize("database", ["wfe.db", "wfe.db-wal", "./wfe.db"])
async def test_save_db_cannot_replace_a_table_of_the_daemon_database(
    engine_factory: Callable[..., Engine],
    data: Path,
    db_path: Path,
    sql: Callable[..., list[dict[str, Any]]],
    database: str,
) -> None:
    """With db_path inside data_dir, save_db refuses it: the daemon's tables stay as they were."""
    assert db_path.parent == data
    (data / "in.csv").write_text("id,note\n1,owned\n")
    node = save(database=database, table="cancel_request", mode="replace")
    summary = await run_doc(engine_factory(), [node])
    entry = summary["nodes"]["s"]
    assert entry["status"] == "FAILED"
    assert entry["error"] == f"database: {database!r} is the daemon's own database; refused"
    columns = [row["name"] for row in sql("SELECT name FROM pragma_table_info('cancel_request')")]
    assert "run_id" in columns and "note" not in columns


# -- cancellation -----------------------------------------------------------------------------


async def test_a_timeout_in_the_last_batch_commits_nothing(
    engine_factory: Callable[..., Engine],
    data: Path,
    stall_last_batch: Callable[[str, float], threading.Event],
) -> None:
    """A timeout during the last batch rolls the load back, so a retry in append mode
    inserts the rows once, not twice."""
    write_rows(data / "in.csv", 25)
    stall_last_batch("24", 0.6)
    node = {**save(), "timeout": 0.2, "retries": 1, "retry_delay": 0}
    summary = await run_doc(engine_factory(), [node])
    entry = summary["nodes"]["s"]
    assert entry["status"] == "SUCCESS", entry
    assert entry["attempts"] == 2
    assert len(rows_of(data / "out.db", "sales")) == 25


async def test_a_cancelled_load_has_rolled_back_when_the_node_ends(
    data: Path, stall_last_batch: Callable[[str, float], threading.Event]
) -> None:
    """Once a cancelled save_db returns, its thread has finished and nothing was committed."""
    write_rows(data / "in.csv", 25)
    stall_last_batch("24", 0.5)
    params = {"source": "in.csv", "database": "out.db", "table": "sales"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(SaveDbTask().execute(params, context(data)), 0.2)
    conn = sqlite3.connect(data / "out.db")
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        conn.close()
