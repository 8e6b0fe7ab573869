"""The run history in SQLite (aiosqlite, WAL): one writer that batches, plus queries.

Writes are queued without awaiting and applied by one writer task in shared
transactions, one aiosqlite round trip per batch. Batches commit in queue order, so
after a crash the database holds a prefix of what happened: a node never appears
finished while a parent it waited for does not. ``finish_run`` returns only once the
run's final state is committed with ``synchronous=FULL`` (fsynced), so a result is
never published for a state the database could lose.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from wfe_daemon.clock import now_iso
from wfe_daemon.errors import DuplicateRun, StoreError

SCHEMA_VERSION = 3

# A run in one of these states no longer holds its idempotency key.
IDEMPOTENCY_FREE = "'FAILED', 'CANCELLED', 'REJECTED', 'DUPLICATE'"

# Forward migrations: MIGRATIONS[v] takes a database from user_version v to v + 1.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the design document's two tables.
    """
    CREATE TABLE workflowrun (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
        started_at TEXT, finished_at TEXT, duration REAL, result_summary TEXT
    );
    CREATE TABLE noderun (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL REFERENCES workflowrun(id) ON DELETE CASCADE,
        node_id TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL,
        started_at TEXT, finished_at TEXT, duration REAL, result_data TEXT
    );
    """,
    # 1 -> 2: what resuming, the summary and the command line need.
    """
    ALTER TABLE workflowrun ADD COLUMN source TEXT;
    ALTER TABLE workflowrun ADD COLUMN source_path TEXT;
    ALTER TABLE workflowrun ADD COLUMN definition TEXT;
    ALTER TABLE workflowrun ADD COLUMN idempotency_key TEXT;
    ALTER TABLE workflowrun ADD COLUMN duplicate_of INTEGER;
    ALTER TABLE workflowrun ADD COLUMN pid INTEGER;
    ALTER TABLE workflowrun ADD COLUMN settled_at TEXT;
    ALTER TABLE noderun ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE noderun ADD COLUMN error TEXT;
    ALTER TABLE noderun ADD COLUMN reason TEXT;
    CREATE UNIQUE INDEX noderun_by_run ON noderun(workflow_id, node_id);
    CREATE INDEX workflowrun_by_status ON workflowrun(status);
    CREATE INDEX workflowrun_by_source ON workflowrun(source_path);
    CREATE UNIQUE INDEX workflowrun_by_idempotency_key ON workflowrun(idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN ({IDEMPOTENCY_FREE});
    """.replace("{IDEMPOTENCY_FREE}", IDEMPOTENCY_FREE),
    # 2 -> 3: operating the service: retries, cancel requests, history by date.
    """
    ALTER TABLE workflowrun ADD COLUMN retry_of INTEGER REFERENCES workflowrun(id);
    CREATE TABLE cancel_request (
        run_id INTEGER PRIMARY KEY REFERENCES workflowrun(id) ON DELETE CASCADE,
        requested_at TEXT NOT NULL
    );
    CREATE INDEX workflowrun_by_started ON workflowrun(started_at);
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION

_GATHER_S = 0.001
_GATHER_BELOW = 256

_NODE_RUNNING = (
    "UPDATE noderun SET status = 'RUNNING', started_at = ?, attempts = ?"
    " WHERE workflow_id = ? AND node_id = ?"
)
_NODE_FINISHED = (
    "UPDATE noderun SET status = ?, started_at = ?, finished_at = ?, duration = ?,"
    " attempts = ?, result_data = ?, error = ?, reason = ? WHERE workflow_id = ? AND node_id = ?"
)
_RUN_FINISHED = (
    "UPDATE workflowrun SET status = ?, finished_at = ?, duration = ?, result_summary = ?"
    " WHERE id = ?"
)


@dataclass(slots=True)
class _Call:
    """A write that needs its result back: ``fn(db)`` runs in the batch, in order."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


_Item = tuple[str, tuple[Any, ...]] | _Call


def _dumps(value: Any) -> str:
    # orjson: a run's summary holds every node; the stdlib encoder took ~7 us a node here.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _statement(item: _Item) -> str | None:
    return None if isinstance(item, _Call) else item[0]


def _apply(db: sqlite3.Connection, batch: Sequence[_Item | None], durable: bool) -> list[Any]:
    """Run one batch as one transaction (in the connection's thread); results of calls.

    Consecutive writes of one statement go through one ``executemany``.
    """
    results: list[Any] = []
    db.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, group in groupby((item for item in batch if item is not None), key=_statement):
            if sql is None:
                results.extend(call.fn(db) for call in group)  # type: ignore[union-attr]
            else:
                db.executemany(sql, [item[1] for item in group])  # type: ignore[index]
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return results


class Store:
    """The repository of runs and nodes. Open it with ``async with Store.open(path)``.

    Event methods (``node_running``, ``node_finished``) queue a write and return at once;
    ``create_run``, ``record_unrun``, ``finish_run`` and ``flush`` wait for theirs.

    Raises:
        StoreError: the file cannot be opened or migrated, or a write failed.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._queue: list[_Item | None] = []
        # Where each node's RUNNING write waits in the queue: when the node finishes before
        # the writer takes the batch, its FINISHED write (which repeats started_at and
        # attempts) replaces it, one UPDATE instead of two.
        self._running_at: dict[tuple[int, str], int] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._durable = False
        self._wakeup = asyncio.Event()
        self._failure: BaseException | None = None
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Store]:
        """Open (creating and migrating as needed) the database at ``path``."""
        connecting = aiosqlite.connect(path, isolation_level=None)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = await connecting
        except (OSError, sqlite3.Error) as exc:
            await _join_worker(connecting)
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        store = cls(conn)
        try:
            await store._prepare(path)
            store._writer = asyncio.create_task(store._write_loop(), name="wfe-store-writer")
            yield store
            await store.flush()
        finally:
            await store._close()

    async def _prepare(self, path: Path) -> None:
        try:
            await self._conn.execute("PRAGMA busy_timeout = 10000")
            await self._conn.execute("PRAGMA journal_mode = WAL")
            await self._conn.execute("PRAGMA foreign_keys = ON")
            await self._call(_migrate)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use database {path}: {exc}") from exc

    async def _close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with suppress(asyncio.CancelledError):
                await self._writer
        await self._conn.close()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # aiosqlite's one way to run a callable in its connection thread: a whole batch
        # becomes one round trip instead of one per statement.
        return await self._conn._execute(fn, self._conn._conn, *args)  # type: ignore[no-untyped-call]

    # -- the writer ---------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._waiters and len(self._queue) < _GATHER_BELOW:
                await asyncio.sleep(_GATHER_S)  # let a trickle of events share a transaction
            while self._queue or self._waiters:
                batch, self._queue = self._queue, []
                self._running_at.clear()
                waiters, self._waiters = self._waiters, []
                durable, self._durable = self._durable, False
                await self._write_batch(batch, waiters, durable)

    async def _write_batch(
        self, batch: list[_Item | None], waiters: list[asyncio.Future[None]], durable: bool
    ) -> None:
        calls = [item for item in batch if isinstance(item, _Call)]
        try:
            results = await self._call(_apply, batch, durable)
        except Exception as exc:
            self._failure = exc
            error = StoreError(f"database write failed: {exc}")
            for future in [*waiters, *(call.future for call in calls)]:
                if not future.done():
                    future.set_exception(error)
            return
        self._failure = None
        for call, result in zip(calls, results, strict=True):
            if not call.future.done():
                call.future.set_result(result)
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Call(fn, future))
        return await future

    async def flush(self, *, durable: bool = False) -> None:
        """Wait until every write queued so far is committed (fsynced when ``durable``)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._durable = self._durable or durable
        self._wakeup.set()
        await future

    @property
    def healthy(self) -> bool:
        """False while the last batch failed."""
        return self._failure is None

    # -- runs and nodes -------------------------------------------------------------------

    async def create_run(
        self,
        *,
        name: str,
        started_at: str,
        nodes: Iterable[tuple[str, str]],
        source: str | None = None,
        source_path: str | None = None,
        definition: str | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Insert a RUNNING run and its nodes (``(node_id, type)``, PENDING); its id.

        Raises:
            DuplicateRun: a run holding the same ``idempotency_key`` exists.
        """
        run_row = (name, started_at, source, source_path, definition, idempotency_key,
                   os.getpid())
        node_rows = list(nodes)

        def insert(db: sqlite3.Connection) -> int:
            if idempotency_key is not None:
                holder = db.execute(
                    "SELECT id FROM workflowrun WHERE idempotency_key = ?"
                    f" AND status NOT IN ({IDEMPOTENCY_FREE})",
                    (idempotency_key,),
                ).fetchone()
                if holder is not None:
                    return -int(holder[0])
            cursor = db.execute(
                "INSERT INTO workflowrun (name, status, started_at, source, source_path,"
                " definition, idempotency_key, pid) VALUES (?, 'RUNNING', ?, ?, ?, ?, ?, ?)",
                run_row,
            )
            run_id = cursor.lastrowid
            assert run_id is not None
            db.executemany(
                "INSERT INTO noderun (workflow_id, node_id, type, status)"
                " VALUES (?, ?, ?, 'PENDING')",
                ((run_id, node_id, node_type) for node_id, node_type in node_rows),
            )
            return run_id

        run_id: int = await self._submit(insert)
        if run_id < 0:  # a negative id names the run that holds the key
            raise DuplicateRun(-run_id)
        return run_id

    async def record_unrun(
        self,
        *,
        status: str,
        name: str,
        source: str | None,
        source_path: str | None,
        at: str,
        summary: dict[str, Any],
        duplicate_of: int | None = None,
    ) -> int:
        """Record a file that never ran (REJECTED or DUPLICATE); its run id, once durable.

        ``summary`` gets the new id as ``run_id`` and is stored as the result summary.
        """
        row = (name, status, at, at, source, source_path, duplicate_of, os.getpid())

        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO workflowrun (name, status, started_at, finished_at, duration,"
                " source, source_path, duplicate_of, pid) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                row,
            )
            assert cursor.lastrowid is not None
            summary["run_id"] = cursor.lastrowid
            db.execute("UPDATE workflowrun SET result_summary = ? WHERE id = ?",
                       (_dumps(summary), cursor.lastrowid))
            return cursor.lastrowid

        run_id: int = await self._submit(insert)
        await self.flush(durable=True)
        return run_id

    def mark_settled(self, run_id: int) -> None:
        """Queue: the run's result is published (and its file moved out of processing)."""
        self._enqueue(("UPDATE workflowrun SET settled_at = ? WHERE id = ?",
                       (now_iso(), run_id)))

    def node_running(self, run_id: int, node_id: str, started_at: str, attempts: int) -> None:
        """Queue: the node holds a slot and runs."""
        self._running_at[run_id, node_id] = len(self._queue)
        self._enqueue((_NODE_RUNNING, (started_at, attempts, run_id, node_id)))

    def node_finished(
        self,
        run_id: int,
        node_id: str,
        *,
        status: str,
        started_at: str | None,
        finished_at: str | None,
        duration: float | None,
        attempts: int,
        output_json: str | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Queue: the node reached a final status (``output_json``: encoded, redacted)."""
        running = self._running_at.pop((run_id, node_id), None)
        if running is not None:
            self._queue[running] = None
        self._enqueue((_NODE_FINISHED, (status, started_at, finished_at, duration, attempts,
                                        output_json, error, reason, run_id, node_id)))

    async def finish_run(
        self, run_id: int, *, status: str, finished_at: str, duration: float, summary: Any
    ) -> None:
        """Record the run's final state and wait until it is durable."""
        self._enqueue((_RUN_FINISHED, (status, finished_at, duration, _dumps(summary), run_id)))
        await self.flush(durable=True)

    # -- queries --------------------------------------------------------------------------

    async def list_runs(
        self, limit: int = 20, *, statuses: Iterable[str] = (), since: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest runs first, without their nodes.

        ``statuses`` keeps runs in one of them; ``since`` (UTC ISO-8601, the stored
        shape) keeps runs started at or after it. ``error`` is the run's first error,
        else its first node error in file order as ``node: error``, else ``None``.
        """
        wanted = tuple(dict.fromkeys(statuses))
        where = [f"status IN ({', '.join('?' * len(wanted))})"] if wanted else []
        if since is not None:
            where.append("started_at >= ?")  # same-offset ISO stamps sort as text
        return await self._query(
            "SELECT id, name, status, source, started_at, finished_at, duration,"
            " COALESCE(json_extract(result_summary, '$.errors[0]'), (SELECT node_id || ': ' ||"
            " error FROM noderun WHERE workflow_id = workflowrun.id AND error IS NOT NULL"
            " ORDER BY id LIMIT 1)) AS error FROM workflowrun"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id DESC LIMIT ?",
            (*wanted, *([since] if since is not None else []), limit),
        )

    async def get_run(self, run_id: int) -> dict[str, Any] | None:
        """One run with its nodes in file order, or ``None``."""
        runs = await self._query(
            "SELECT id, name, status, source, source_path, started_at, finished_at, duration,"
            " idempotency_key, definition, result_summary FROM workflowrun WHERE id = ?",
            (run_id,),
        )
        if not runs:
            return None
        run = runs[0]
        for key in ("definition", "result_summary"):
            run[key] = json.loads(run[key]) if run[key] else None
        run["nodes"] = await self._query(
            "SELECT node_id, type, status, attempts, started_at, finished_at, duration,"
            " result_data, error, reason FROM noderun WHERE workflow_id = ? ORDER BY id",
            (run_id,),
        )
        for node in run["nodes"]:
            node["result_data"] = json.loads(node["result_data"]) if node["result_data"] else None
        return run

    async def unfinished_runs(self) -> list[dict[str, Any]]:
        """Runs still RUNNING, oldest first: ``id``, ``source_path``, ``pid``."""
        return await self._query(
            "SELECT id, source_path, pid FROM workflowrun WHERE status = 'RUNNING' ORDER BY id"
        )

    async def run_for_source(self, source_path: str) -> dict[str, Any] | None:
        """The newest run of the file at ``source_path`` that is not settled yet, if any."""
        rows = await self._query(
            "SELECT id FROM workflowrun WHERE source_path = ? AND settled_at IS NULL"
            " ORDER BY id DESC LIMIT 1",
            (source_path,),
        )
        return await self.get_run(rows[0]["id"]) if rows else None

    async def abandon_run(self, run_id: int, reason: str, finished_at: str) -> str:
        """End a RUNNING run nobody will resume: unfinished nodes SKIPPED with ``reason``;
        the run FAILED, or PARTIAL_SUCCESS when some node succeeded. Returns that status."""

        def close(db: sqlite3.Connection) -> str:
            db.execute(
                "UPDATE noderun SET status = 'SKIPPED', reason = ?"
                " WHERE workflow_id = ? AND status IN ('PENDING', 'RUNNING')",
                (reason, run_id),
            )
            succeeded = db.execute(
                "SELECT 1 FROM noderun WHERE workflow_id = ? AND status = 'SUCCESS' LIMIT 1",
                (run_id,),
            ).fetchone()
            status = "PARTIAL_SUCCESS" if succeeded else "FAILED"
            db.execute(
                "UPDATE workflowrun SET status = ?, finished_at = ?, settled_at = ? WHERE id = ?",
                (status, finished_at, finished_at, run_id),
            )
            return status

        status: str = await self._submit(close)
        return status

    async def set_summary(self, run_id: int, summary: Any) -> None:
        """Store a run's result summary, durably."""
        self._enqueue(("UPDATE workflowrun SET result_summary = ? WHERE id = ?",
                       (_dumps(summary), run_id)))
        await self.flush(durable=True)

    async def unsettled_runs(self) -> list[dict[str, Any]]:
        """Finished runs of a file whose result is not marked published: ``id``, ``source_path``."""
        return await self._query(
            "SELECT id, source_path FROM workflowrun WHERE settled_at IS NULL"
            " AND status != 'RUNNING' AND source_path IS NOT NULL ORDER BY id"
        )

    # -- operations: cancel requests, retries, retention ------------------------------

    async def request_cancel(self, run_id: int, requested_at: str) -> dict[str, Any] | None:
        """Ask for run ``run_id`` to be cancelled if it is RUNNING; the run's ``status`` and
        ``pid`` (``None`` for no such run). A repeated request keeps the first one's time."""

        def insert(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT status, pid FROM workflowrun WHERE id = ?",
                             (run_id,)).fetchone()
            if row is None:
                return None
            if row[0] == "RUNNING":
                db.execute("INSERT OR IGNORE INTO cancel_request (run_id, requested_at)"
                           " VALUES (?, ?)", (run_id, requested_at))
            return {"status": row[0], "pid": row[1]}

        found: dict[str, Any] | None = await self._submit(insert)
        return found

    async def cancel_requests(self) -> list[dict[str, Any]]:
        """Pending cancel requests, oldest first: ``run_id`` and the run's ``status``
        (``None`` when the run no longer exists)."""
        return await self._query(
            "SELECT c.run_id, w.status FROM cancel_request AS c"
            " LEFT JOIN workflowrun AS w ON w.id = c.run_id ORDER BY c.requested_at"
        )

    def drop_cancel_requests(self, run_ids: Iterable[int]) -> None:
        """Queue: these cancel requests are handled."""
        for run_id in run_ids:
            self._enqueue(("DELETE FROM cancel_request WHERE run_id = ?", (run_id,)))

    async def take_cancel_request(self, run_id: int) -> bool:
        """Delete the cancel request of ``run_id``; whether there was one."""

        def take(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM cancel_request WHERE run_id = ?", (run_id,))
            return cursor.rowcount > 0

        taken: bool = await self._submit(take)
        return taken

    async def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes only when another connection commits,
        so polling it costs one cheap statement and never sees this store's own writes."""
        rows = await self._query("PRAGMA data_version")
        return int(next(iter(rows[0].values())))

    async def create_retry(
        self,
        retry_of: int,
        *,
        name: str,
        started_at: str,
        nodes: Iterable[tuple[str, str]],
        source: str | None,
        definition: str | None,
        idempotency_key: str | None,
        reused_reason: str,
    ) -> int:
        """Insert a RUNNING run linked to run ``retry_of``, in one transaction; its id.

        Its nodes (``(node_id, type)``) start PENDING, except those that were SUCCESS in run
        ``retry_of`` with the same type: they are copied (output, times, attempts) with
        ``reused_reason`` as their reason. ``idempotency_key`` is taken only when no run
        holds it (e.g. the original FAILED); otherwise the retry runs without a key.
        """
        node_rows = list(nodes)

        def insert(db: sqlite3.Connection) -> int:
            key = idempotency_key
            if key is not None and db.execute(
                "SELECT 1 FROM workflowrun WHERE idempotency_key = ?"
                f" AND status NOT IN ({IDEMPOTENCY_FREE})", (key,),
            ).fetchone():
                key = None
            cursor = db.execute(
                "INSERT INTO workflowrun (name, status, started_at, source, definition,"
                " idempotency_key, retry_of, pid) VALUES (?, 'RUNNING', ?, ?, ?, ?, ?, ?)",
                (name, started_at, source, definition, key, retry_of, os.getpid()),
            )
            run_id = cursor.lastrowid
            assert run_id is not None
            db.executemany(
                "INSERT INTO noderun (workflow_id, node_id, type, status)"
                " VALUES (?, ?, ?, 'PENDING')",
                ((run_id, node_id, node_type) for node_id, node_type in node_rows),
            )
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

        run_id: int = await self._submit(insert)
        return run_id

    async def prune_runs(self, before: str, batch: int = 500) -> tuple[int, int]:
        """Delete runs that finished before ``before`` (ISO-8601 UTC) with their nodes; never
        RUNNING ones, nor those of a file whose result is not published yet. ``batch`` runs
        per transaction, so the writer never holds a long one. Returns ``(runs, nodes)``."""

        def prune(db: sqlite3.Connection) -> tuple[int, int]:
            # started_at <= finished_at: the started_at index finds the candidates. A run
            # whose result is not published yet is kept: recovery still needs it.
            ids = [row[0] for row in db.execute(
                "SELECT id FROM workflowrun WHERE started_at < ?1 AND finished_at < ?1"
                " AND status != 'RUNNING' AND (settled_at IS NOT NULL OR source_path IS NULL)"
                " LIMIT ?2", (before, batch),
            )]
            if not ids:
                return 0, 0
            marks = ",".join("?" * len(ids))
            db.execute(f"UPDATE workflowrun SET retry_of = NULL WHERE retry_of IN ({marks})",
                       ids)
            nodes = db.execute(f"DELETE FROM noderun WHERE workflow_id IN ({marks})",
                               ids).rowcount
            runs = db.execute(f"DELETE FROM workflowrun WHERE id IN ({marks})", ids).rowcount
            return runs, nodes

        runs = nodes = 0
        while True:
            pruned: tuple[int, int] = await self._submit(prune)
            if pruned[0] == 0:
                return runs, nodes
            runs, nodes = runs + pruned[0], nodes + pruned[1]

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            async with self._conn.execute(sql, params) as cursor:
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
        except sqlite3.Error as exc:
            raise StoreError(f"database query failed: {exc}") from exc


async def _join_worker(conn: aiosqlite.Connection) -> None:
    """Wait for the worker thread of a connection that failed to open.

    aiosqlite stops that thread without waiting for it; if the event loop closes first,
    the thread reports to a closed loop and prints a traceback.
    """
    thread = getattr(conn, "_thread", None)
    if thread is not None and thread.is_alive():
        await asyncio.to_thread(thread.join, 5)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema forward to ``SCHEMA_VERSION``, one step per transaction."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this program's {SCHEMA_VERSION}"
        )
    for step in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {step + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
