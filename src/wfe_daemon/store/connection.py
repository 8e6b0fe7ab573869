"""Opening the SQLite file, and what its errors mean: a fault that may heal, or damage.

A transient fault (a lock held elsewhere, a full disk, an I/O error, a read-only or
unreachable file) can go away by itself, so the store retries it. A damaged file (SQLite's
CORRUPT or NOTADB) cannot: it is :class:`~wfe_daemon.errors.StoreCorrupt`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from enum import Enum
from pathlib import Path
from urllib.parse import quote

import aiosqlite
import anyio

from wfe_daemon.errors import StoreCorrupt, StoreError
from wfe_daemon.faults import Backoff, Incident
from wfe_daemon.store._aiosqlite import join_worker, run_in_thread
from wfe_daemon.store.migrations import SCHEMA_VERSION, migrate

__all__ = [
    "Fault",
    "connect",
    "connect_patiently",
    "connect_read_only",
    "corrupt",
    "fault_of",
    "run_in_thread",
]

_TRANSIENT = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_PROTOCOL,
    }
)
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# A connection opened while the file could not be written stays read-only for good, and
# one whose file went away keeps failing: these faults heal only on a new connection.
_REOPEN = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR})


class Fault(Enum):
    """What an error means for the store."""

    TRANSIENT = "transient"  # retry: the cause may go away
    REOPEN = "reopen"  # transient, and retried on a new connection
    DAMAGED = "damaged"  # the file is corrupt: nothing heals it
    OTHER = "other"  # a constraint, a bug in a call: fails its callers at once


def fault_of(exc: BaseException) -> Fault:
    """Classify an exception raised by a database operation."""
    if isinstance(exc, StoreCorrupt):
        return Fault.DAMAGED
    if isinstance(exc, OSError):  # making the folder, or a file gone mid-open
        return Fault.REOPEN
    code = getattr(exc, "sqlite_errorcode", None)  # not on every sqlite3.Error
    if code is None:
        return Fault.OTHER
    code &= 0xFF
    if code in _DAMAGED:
        return Fault.DAMAGED
    if code in _REOPEN:
        return Fault.REOPEN
    return Fault.TRANSIENT if code in _TRANSIENT else Fault.OTHER


def corrupt(path: Path, exc: BaseException) -> StoreCorrupt:
    """The error for a damaged file, naming it and what to do."""
    error = StoreCorrupt(
        f"database {path} is damaged ({exc}): restore it from a backup, or move it away"
        " to start a new one"
    )
    error.__cause__ = exc
    return error


async def connect(
    path: Path, busy_timeout_s: float, *, check: bool = False, create: bool = True
) -> aiosqlite.Connection:
    """A writing connection: WAL, foreign keys, the schema migrated forward.

    With ``create=False`` (a reconnect after a fault) a missing file stays a fault
    (SQLite's "unable to open"), instead of becoming a new empty database: the mount it
    lived on may only be away for a moment.

    ``check`` runs ``PRAGMA quick_check`` first. It reads every page (about 0.4 s per
    100 MB with the file in the OS cache) and finds pages damaged mid-file, which no
    other start-up statement reads; a random or truncated file is found without it.

    Raises:
        StoreCorrupt: the file is damaged or not a database.
        sqlite3.Error, OSError: anything else; the caller decides whether to retry.
    """
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await _open(str(path))
    else:
        conn = await _open(_existing_file_uri(path), uri=True)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        if check:
            await _quick_check(conn, path)
        await _use_wal(conn, busy_timeout_s)
        await conn.execute("PRAGMA foreign_keys = ON")
        await run_in_thread(conn, migrate)
    except BaseException as exc:
        await conn.close()
        if fault_of(exc) is Fault.DAMAGED and not isinstance(exc, StoreCorrupt):
            raise corrupt(path, exc) from exc
        raise
    return conn


async def connect_patiently(
    path: Path,
    busy_timeout_s: float,
    give_up_s: float | None,
    incident: Incident,
    *,
    check: bool = False,
) -> aiosqlite.Connection:
    """:func:`connect`; with ``give_up_s=None`` a transient fault is retried with backoff
    (one incident) until it passes, else it fails at once.

    Raises:
        StoreCorrupt: the file is damaged or not a database.
        StoreError: any other failure (with ``give_up_s=None``: one no retry heals).
    """
    backoff = Backoff(first_s=0.05, max_s=2.0)
    while True:
        try:
            return await connect(path, busy_timeout_s, check=check)
        except (OSError, sqlite3.Error) as exc:
            if give_up_s is not None or fault_of(exc) is Fault.OTHER:
                raise StoreError(f"cannot open database {path}: {exc}") from exc
            incident.failed(f"cannot open database: {exc}", db_path=str(path))
        await asyncio.sleep(backoff.next())


async def connect_read_only(path: Path, busy_timeout_s: float) -> aiosqlite.Connection:
    """A connection for queries that never writes nor takes the write lock: no WAL switch,
    no migration. A missing file (or one no schema was written to yet) reads as an empty
    database, and nothing is created.

    Raises:
        StoreCorrupt: the file is damaged or not a database.
        StoreError: the file cannot be read, or its schema is not this program's.
    """
    where = anyio.Path(path)
    if not await where.exists():
        return await _empty()
    uri = f"file:{quote(str(await where.absolute()))}?mode=ro"
    try:
        conn = await _open(uri, uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        await conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
    except sqlite3.Error as exc:
        await conn.close()
        raise _read_error(path, exc) from exc
    version = int(row[0]) if row else 0
    if version == SCHEMA_VERSION:
        return conn
    await conn.close()
    if version == 0:
        return await _empty()
    raise StoreError(_version_problem(path, version))


def _read_error(path: Path, exc: sqlite3.Error) -> StoreError:
    if fault_of(exc) is Fault.DAMAGED:
        return corrupt(path, exc)
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
        return StoreError(f"database {path} is locked by another process; try again ({exc})")
    return StoreError(f"cannot read database {path}: {exc}")


def _version_problem(path: Path, version: int) -> str:
    if version > SCHEMA_VERSION:
        return f"database schema version {version} is newer than this program's {SCHEMA_VERSION}"
    return (
        f"database {path} has schema version {version}, older than this program's"
        f" {SCHEMA_VERSION}: the daemon migrates it when it starts (as does execute),"
        " then it can be read"
    )


async def _empty() -> aiosqlite.Connection:
    """An empty database at the current schema, in memory."""
    conn = await _open(":memory:")
    await run_in_thread(conn, migrate)
    return conn


def _existing_file_uri(path: Path) -> str:
    """An SQLite URI that opens ``path`` for writing only if it exists (never creates it)."""
    return f"file:{quote(os.path.abspath(path))}?mode=rw"


async def _open(database: str, *, uri: bool = False) -> aiosqlite.Connection:
    connecting = aiosqlite.connect(database, isolation_level=None, uri=uri)
    try:
        return await connecting
    except BaseException:
        await join_worker(connecting)
        raise


async def _quick_check(conn: aiosqlite.Connection, path: Path) -> None:
    async with conn.execute("PRAGMA quick_check(1)") as cursor:
        row = await cursor.fetchone()
    if row is None or row[0] != "ok":
        raise corrupt(path, sqlite3.DatabaseError(f"quick_check: {row[0] if row else '?'}"))


async def _use_wal(conn: aiosqlite.Connection, patience_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, tried again while another connection holds the lock.

    Switching a fresh file to WAL takes an exclusive lock, and SQLite answers "database
    is locked" at once, without waiting out ``busy_timeout``, when another connection
    is switching it too (processes opening a new database together).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    delay = 0.005
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or loop.time() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
