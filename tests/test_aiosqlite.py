"""aiosqlite's private API that ``wfe_daemon.store._aiosqlite`` relies on is still there and works.

A failure here means an aiosqlite release moved it: adapt ``src/wfe_daemon/store/_aiosqlite.py``,
the one module that touches it.
"""

from __future__ import annotations

import ast
import inspect
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import pytest

import wfe_daemon
from wfe_daemon.store._aiosqlite import join_worker, run_in_thread, worker_thread

MODULE = "src/wfe_daemon/store/_aiosqlite.py"


def moved(what: str) -> str:
    return f"aiosqlite {aiosqlite.__version__} no longer has {what}: see {MODULE}"


def test_execute_is_a_coroutine_taking_a_callable_and_its_arguments() -> None:
    """``Connection._execute(fn, *args)`` exists as a coroutine function with that signature."""
    execute = getattr(aiosqlite.Connection, "_execute", None)
    assert execute is not None, moved("Connection._execute")
    assert inspect.iscoroutinefunction(execute), moved("a coroutine Connection._execute")
    params = list(inspect.signature(execute).parameters.values())
    kinds = [(p.name, p.kind) for p in params[:3]]
    assert kinds == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("fn", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("args", inspect.Parameter.VAR_POSITIONAL),
    ], moved(f"Connection._execute(self, fn, *args) (it is {inspect.signature(execute)})")


async def test_run_in_thread_calls_on_the_sqlite3_connection_in_the_worker_thread(
    tmp_path: Path,
) -> None:
    """``_conn`` is the ``sqlite3.Connection``, and ``_execute`` runs on the worker thread."""
    async with aiosqlite.connect(tmp_path / "t.db", isolation_level=None) as conn:
        raw = getattr(conn, "_conn", None)
        assert isinstance(raw, sqlite3.Connection), moved("Connection._conn")
        thread = worker_thread(conn)
        assert thread is not None, moved("Connection._thread")

        def probe(db: sqlite3.Connection, value: int) -> tuple[int, int, bool]:
            db.execute("CREATE TABLE t (v INTEGER)")
            db.execute("INSERT INTO t VALUES (?)", (value,))
            return threading.get_ident(), db.execute("SELECT v FROM t").fetchone()[0], db is raw

        ident, seen, same = await run_in_thread(conn, probe, 7)
        assert (seen, same) == (7, True), moved("Connection._execute(fn, _conn, *args)")
        assert ident == thread.ident != threading.get_ident(), moved(
            "Connection._execute running in the connection's thread"
        )
        async with conn.execute("SELECT v FROM t") as cursor:
            assert await cursor.fetchone() == (7,)


async def test_the_worker_thread_of_an_open_connection_ends_at_close(tmp_path: Path) -> None:
    """``worker_thread`` finds the running thread, which ends once the connection closes."""
    conn = await aiosqlite.connect(tmp_path / "t.db")
    thread = worker_thread(conn)
    assert thread is not None and thread.is_alive(), moved("Connection._thread")
    await conn.close()
    thread.join(5)
    assert not thread.is_alive()


async def test_join_worker_waits_for_the_thread_of_a_connection_that_failed_to_open(
    tmp_path: Path,
) -> None:
    """A failed open leaves a stopping thread behind, which ``join_worker`` waits for."""
    connecting = aiosqlite.connect(tmp_path / "no-such-folder" / "t.db")
    with pytest.raises(sqlite3.OperationalError):
        await connecting
    thread = worker_thread(connecting)
    assert thread is not None, moved("Connection._thread")
    await join_worker(connecting)
    assert not thread.is_alive(), moved("a worker thread that stops after a failed open")


def test_no_other_module_reaches_into_aiosqlite() -> None:
    """Only ``_aiosqlite.py`` touches a private name on an object other than ``self``."""
    private = {"_execute", "_conn", "_connection", "_thread", "_tx", "_running"}
    package = Path(wfe_daemon.__file__).parent
    offenders = []
    for source in sorted(package.rglob("*.py")):
        if source.name == "_aiosqlite.py":
            continue
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            reached = (
                node.attr
                if isinstance(node, ast.Attribute)
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
                else node.value
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                else None
            )
            if reached in private:
                offenders.append(f"{source.relative_to(package)}:{node.lineno} {reached}")
    assert offenders == [], f"aiosqlite's private names belong in {MODULE} only"
