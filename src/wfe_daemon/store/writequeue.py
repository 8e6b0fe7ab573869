"""The store's one writer: queued writes applied in batches, in order, retried until they land.

Writes are queued without awaiting and applied by one writer task in shared transactions,
one aiosqlite round trip per batch. Before each batch the writer waits ``_GATHER_S`` for
more writes unless a ``flush`` waits or many are queued, so a busy engine commits about one
batch a millisecond, not one per round trip. Batches commit in queue order, so the
database always holds a prefix of what happened.

A batch that fails (say another process holds the write lock past the busy timeout, or
the disk is full) is rolled back and put back at the head of the queue, before anything
queued since, then retried with backoff (0.05 s doubling to 2 s); the next attempt takes
the whole queue, so writes queued meanwhile share its transaction. ``healthy`` is False
until a batch commits. The spell is one incident (``wfe_daemon.faults``): ``fault.begun``
with SQLite's error at the first failure, ``fault.healed`` with the count at the first
commit after it; a read-only or unreachable file is retried on a new connection.

- Fire-and-forget writes (``enqueue``) are never dropped: they are retried until they commit.
- Callers waiting (a ``_Call`` or ``flush``) wait through a transient fault (``connection``:
  busy, locked, full, I/O, read-only, cannot open) for up to ``give_up_s`` from the first
  failure (``None``: as long as it lasts), then get ``StoreError``. Any other error (a
  constraint, a bug in a call) fails them at once.
- A damaged file (corrupt, not a database) heals by no retry: every waiter, present and
  future, gets ``StoreCorrupt`` at once, ``fatal`` holds it, and the writer stops.
- A ``_Call`` runs only while its future is pending: one whose future is done (failed by the
  writer, or cancelled by its caller) is dropped when a batch is taken, so a call whose
  caller was told it failed never runs later. A call cancelled while its batch is in flight
  still commits, as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import aiosqlite

from wfe_daemon.errors import StoreCorrupt, StoreError
from wfe_daemon.faults import Backoff, Incident
from wfe_daemon.store.connection import Fault, corrupt, fault_of, run_in_thread

_GATHER_S = 0.001
_GATHER_BELOW = 256
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


@dataclass(slots=True)
class _Call:
    """A write that needs its result back: ``fn(db)`` runs in the batch, in order."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


Item = tuple[str, tuple[Any, ...]] | _Call
NodeKey = tuple[int, str]


def _statement(item: Item) -> str | None:
    return None if isinstance(item, _Call) else item[0]


def _wanted(item: Item) -> bool:
    return not (isinstance(item, _Call) and item.future.done())


def _apply(db: sqlite3.Connection, batch: Sequence[Item], durable: bool) -> list[Any]:
    """Run one batch as one transaction (in the connection's thread); results of calls.

    Consecutive writes of one statement go through one ``executemany``.
    """
    results: list[Any] = []
    rollback(db)  # a transaction a failed ROLLBACK left open would refuse this BEGIN
    db.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, group in groupby(batch, key=_statement):
            if sql is None:
                results.extend(call.fn(db) for call in group)  # type: ignore[union-attr]
            else:
                db.executemany(sql, [item[1] for item in group])  # type: ignore[index]
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return results


def rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any, keeping the error that led here.

    SQLite may already have rolled back by itself (a full disk, an I/O error): a ROLLBACK
    then fails with "no transaction is active", which must not replace the real error.
    """
    if db.in_transaction:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class Writer:
    """The write queue of one connection; ``run()`` is its writer task (owned by the Store).

    ``reopen()`` returns a new connection to the file at ``path``, used after a fault that
    only a new connection heals.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        path: Path,
        *,
        give_up_s: float | None,
        incident: Incident,
        reopen: Callable[[], Awaitable[aiosqlite.Connection]],
    ) -> None:
        self.conn = conn
        self._path = path
        self._give_up_s = give_up_s
        self._incident = incident
        self._reopen = reopen
        self._queue: list[Item | None] = []
        # Where each node's RUNNING write waits in the queue: when the node finishes before
        # the writer takes the batch, its FINISHED write (which repeats started_at and
        # attempts) replaces it, one UPDATE instead of two.
        self._running_at: dict[NodeKey, int] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._durable = False
        self._wakeup = asyncio.Event()
        self._failure: BaseException | None = None
        self._failing_since: float | None = None
        self._backoff = Backoff(first_s=_RETRY_FIRST_S, max_s=_RETRY_MAX_S)
        self.fatal: StoreCorrupt | None = None
        self._fatal_event = asyncio.Event()
        self._refused: StoreError | None = None
        self._stale = False  # open a new connection before the next use
        self._closed = False
        self._reconnecting = asyncio.Lock()

    @property
    def healthy(self) -> bool:
        """False while writes are failing (from a failed batch until one commits)."""
        return self._failure is None and self.fatal is None

    @property
    def pending(self) -> int:
        """Writes queued and not committed yet."""
        return sum(item is not None for item in self._queue)

    def refuse(self, error: StoreError) -> None:
        """Refuse every write from now on with ``error`` (a store opened read-only)."""
        self._refused = error

    def enqueue(self, item: Item) -> None:
        """Queue a write; it commits after everything queued before it."""
        if self._refused is not None:
            raise self._refused
        if self.fatal is not None:
            return  # nothing will be written again; the callers waiting were told
        self._queue.append(item)
        self._wakeup.set()

    def enqueue_running(self, node: NodeKey, item: Item) -> None:
        """Queue a node's RUNNING write, replaceable by its FINISHED write until taken."""
        self._running_at[node] = len(self._queue)
        self.enqueue(item)

    def enqueue_finished(self, node: NodeKey, item: Item) -> None:
        """Queue a node's FINISHED write, dropping its RUNNING write if not taken yet."""
        running = self._running_at.pop(node, None)
        if running is not None and running < len(self._queue):
            self._queue[running] = None
        self.enqueue(item)

    async def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Queue ``fn(db)`` and wait for its result once its batch commits."""
        if self.fatal is not None:
            raise self.fatal
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.enqueue(_Call(fn, future))
        return await future

    async def flush(self, *, durable: bool = False) -> None:
        """Wait until every write queued so far is committed (fsynced when ``durable``)."""
        if self.fatal is not None:
            raise self.fatal
        if self._refused is not None:
            return  # nothing was written, nothing to wait for
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._durable = self._durable or durable
        self._wakeup.set()
        await future

    async def wait_fatal(self) -> StoreCorrupt:
        """Return the error once the file is found damaged (never returns otherwise)."""
        await self._fatal_event.wait()
        assert self.fatal is not None
        return self.fatal

    def declare_damaged(self, exc: BaseException) -> StoreCorrupt:
        """The file is damaged (found by a query, say): fail everything, stop writing."""
        if self.fatal is None:
            self.fatal = corrupt(self._path, exc)
            self._incident.failed(str(self.fatal), db_path=str(self._path))
            calls = [item.future for item in self._queue if isinstance(item, _Call)]
            self._fail([*self._waiters, *calls], self.fatal)
            self._queue, self._waiters = [], []
            self._fatal_event.set()
            self._wakeup.set()
        return self.fatal

    async def run(self) -> None:
        """Apply queued writes until cancelled, or until the file is found damaged."""
        while self.fatal is None:
            await self._wakeup.wait()
            self._wakeup.clear()
            while (self._queue or self._waiters) and self.fatal is None:
                if not self._waiters and len(self._queue) < _GATHER_BELOW:
                    await asyncio.sleep(_GATHER_S)  # let a trickle of events share a transaction
                if not await self._write_next():
                    await asyncio.sleep(self._backoff.next())

    async def _write_next(self) -> bool:
        """Take the whole queue and commit it as one batch; whether that worked."""
        batch = [item for item in self._queue if item is not None and _wanted(item)]
        self._queue = []
        self._running_at.clear()
        waiters, self._waiters = self._waiters, []
        durable, self._durable = self._durable, False
        try:
            conn = await self.connection()
            # Nothing to write: a flush must not wait for the write lock held elsewhere.
            results = (
                await run_in_thread(conn, _apply, batch, durable) if (batch or durable) else []
            )
        except Exception as exc:
            self._requeue(exc, batch, waiters, durable)
            if fault_of(exc) is Fault.REOPEN:
                self._stale = True
            return False
        self._failure = self._failing_since = None
        self._backoff.reset()
        self._incident.healed()
        calls = [item for item in batch if isinstance(item, _Call)]
        for call, result in zip(calls, results, strict=True):
            if not call.future.done():
                call.future.set_result(result)
        for future in waiters:
            if not future.done():
                future.set_result(None)
        return True

    def _requeue(
        self, exc: Exception, batch: list[Item], waiters: list[asyncio.Future[None]], durable: bool
    ) -> None:
        """Put a failed batch back at the head of the queue; fail its waiters once out of time."""
        fault = fault_of(exc)
        calls = [item.future for item in batch if isinstance(item, _Call)]
        if fault is Fault.DAMAGED:
            self._fail([*waiters, *calls], self.declare_damaged(exc))
            return
        now = asyncio.get_running_loop().time()
        self._failure = exc
        self._incident.failed(str(exc), db_path=str(self._path))
        if self._failing_since is None:
            self._failing_since = now
        if fault is not Fault.OTHER and (
            self._give_up_s is None or now - self._failing_since < self._give_up_s
        ):
            self._waiters[:0] = waiters
        else:
            error = StoreError(f"database write failed: {exc}")
            error.__cause__ = exc
            self._fail([*waiters, *calls], error)  # a done call is dropped on the next attempt
        # Before anything queued while the batch was in flight: commits stay in queue order.
        self._queue[:0] = batch
        self._running_at = {node: at + len(batch) for node, at in self._running_at.items()}
        self._durable = self._durable or durable

    async def close(self) -> None:
        """Close the connection (once the writer task is done)."""
        if not self._closed:
            self._closed = True
            await self.conn.close()

    async def connection(self) -> aiosqlite.Connection:
        """The open connection; after a fault that only a new one heals, a new one.

        Returns without yielding to the loop unless it opens one, so an operation queued
        on the connection at once runs before any close of it.

        Raises:
            StoreCorrupt: the file is found damaged on opening it again.
            sqlite3.Error, OSError: it cannot be opened again (yet).
        """
        async with self._reconnecting:
            if self._stale:
                # The old one is closed first: SQLite shares one file handle and one WAL
                # index per file within a process, and a new connection opened beside
                # the old would inherit its read-only ones.
                await self.close()
                try:
                    self.conn = await self._reopen()
                except Exception as exc:
                    if fault_of(exc) is Fault.DAMAGED:
                        raise self.declare_damaged(exc) from exc
                    raise
                self._closed = self._stale = False
        return self.conn

    @staticmethod
    def _fail(futures: Sequence[asyncio.Future[Any]], error: BaseException) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(error)
