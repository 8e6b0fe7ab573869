"""The two things the store needs from aiosqlite that it does not make public.

- :func:`run_in_thread`: run a callable on the ``sqlite3.Connection`` in the connection's
  own thread, in one round trip (a migration, a batch of writes in one transaction).
  aiosqlite has no public way to do it: ``Connection._execute`` and ``Connection._conn``.
- :func:`join_worker`: wait for the worker thread of a connection that failed to open.
  aiosqlite stops that thread without waiting for it; if the event loop closes first, the
  thread reports to a closed loop and prints a traceback. The thread is
  ``Connection._thread`` from aiosqlite 0.22, and the connection itself (a ``Thread``
  subclass) before.

Nothing else in the package touches aiosqlite's private names. ``tests/test_aiosqlite.py``
fails, naming this module, when an aiosqlite release moves any of them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import aiosqlite

__all__ = ["join_worker", "run_in_thread", "worker_thread"]


async def run_in_thread(conn: aiosqlite.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(sqlite3_connection, *args)`` in the connection's thread, one round trip."""
    raw: sqlite3.Connection = conn._conn
    return await conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]


def worker_thread(conn: aiosqlite.Connection) -> threading.Thread | None:
    """The thread that runs ``conn``'s statements, or None if this aiosqlite hides it."""
    thread = getattr(conn, "_thread", conn)
    return thread if isinstance(thread, threading.Thread) else None


async def join_worker(conn: aiosqlite.Connection, timeout_s: float = 5.0) -> None:
    """Wait (at most ``timeout_s``) for the worker thread of a connection that failed to open."""
    thread = worker_thread(conn)
    if thread is not None and thread.is_alive():
        await asyncio.to_thread(thread.join, timeout_s)
