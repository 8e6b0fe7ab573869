"""The run history in SQLite (aiosqlite, WAL): one writer that batches, plus queries.

Writes are queued without awaiting and applied by one writer task (``writequeue``) in shared
transactions, one aiosqlite round trip per batch. Batches commit in queue order, and a
failed batch is retried ahead of later ones, so the database holds a prefix of what
happened: a node never appears finished while a parent it waited for does not.
``finish_run`` returns only once the run's final state is committed with
``synchronous=FULL`` (fsynced), so a result is never published for a state the database
could lose. The schema and its migrations live in ``migrations``.

Watchers (``Store.watch``) are told every run and node transition: a node's as it is
queued, a run's once committed; with no watcher, that costs one truth test per transition.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiosqlite
import anyio
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.core.records import (
    CancelRequest,
    CancelTarget,
    LinkedListing,
    NodeEvent,
    NodeRecord,
    RunEvent,
    RunListing,
    RunRecord,
    StoreEvent,
    UnfinishedRun,
    UnsettledRun,
)
from wfe_daemon.core.summary import RunSummary
from wfe_daemon.errors import DuplicateRun, StoreCorrupt, StoreError
from wfe_daemon.faults import Faults
from wfe_daemon.store import transactions as _tx
from wfe_daemon.store.connection import (
    Fault,
    connect,
    connect_patiently,
    connect_read_only,
    fault_of,
    run_in_thread,
)
from wfe_daemon.store.migrations import CAUSE, MIGRATIONS, SCHEMA_VERSION
from wfe_daemon.store.writequeue import Writer
from wfe_daemon.taskgroup import BackgroundTasks, background_tasks

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Store"]

_BUSY_TIMEOUT_S = 10.0
_GIVE_UP_S = 30.0
_READ_BUSY_TIMEOUT_S = 2.0  # only a database not in WAL mode makes readers wait
_CLOSE_WAIT_S = 5.0

STORE_UNWRITTEN = "store.unwritten"
STORE_WATCHER_FAILED = "store.watcher_failed"

Watcher = Callable[[StoreEvent], None]
"""Told each transition (``Store.watch``); it runs in the caller's turn, so it must be quick."""

log = structlog.get_logger()

_NODE_RUNNING = (
    "UPDATE noderun SET status = 'RUNNING', started_at = ?, attempts = ?"
    " WHERE workflow_id = ? AND node_id = ?"
)
_NODE_FINISHED = (
    "UPDATE noderun SET status = ?, started_at = ?, finished_at = ?, duration = ?,"
    " attempts = ?, result_data = ?, error = ?, reason = ?, cause = ?"
    " WHERE workflow_id = ? AND node_id = ?"
)
_RUN_FINISHED = (
    "UPDATE workflowrun SET status = ?, finished_at = ?, duration = ?, result_summary = ?"
    " WHERE id = ?"
)


@dataclass(slots=True, eq=False)
class _Probe:
    """A write that proves the file writable: its outcome once it has one."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: Exception | None = None


class Store:
    """The repository of runs and nodes. Open it with ``async with Store.open(path)``.

    Event methods (``node_running``, ``node_finished``) queue a write and return at once;
    ``create_run``, ``record_unrun``, ``finish_run`` and ``flush`` wait for theirs.
    A write batch that fails (e.g. another process holds the lock, the disk is full) is
    retried with backoff ahead of later writes, and ``healthy`` is False meanwhile (the
    ``"store"`` incident is open); queued events are never dropped.

    Raises:
        StoreError: the file cannot be opened or migrated, a query failed, or writes a
            caller waits for kept failing for ``give_up_s`` (or failed other than by a
            transient fault).
        StoreCorrupt: the file is damaged; from then on ``fatal`` holds the error and
            every write fails with it.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        path: Path,
        *,
        busy_timeout_s: float = _BUSY_TIMEOUT_S,
        give_up_s: float | None = _GIVE_UP_S,
        faults: Faults | None = None,
    ) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._give_up_s = give_up_s
        self._incident = (Faults() if faults is None else faults)["store"]
        self._writer = Writer(
            conn,
            path,
            give_up_s=give_up_s,
            incident=self._incident,
            reopen=partial(connect, path, busy_timeout_s, create=False),
        )
        self._tasks: BackgroundTasks | None = None
        """Owns the writer and the probes while the store is open for writing."""
        self._probe: _Probe | None = None
        self._watchers: tuple[Watcher, ...] = ()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout_s: float = _BUSY_TIMEOUT_S,
        give_up_s: float | None = _GIVE_UP_S,
        faults: Faults | None = None,
        check: bool = False,
    ) -> AsyncIterator[Store]:
        """Open (creating and migrating as needed) the database at ``path``.

        ``busy_timeout_s`` is how long one statement waits for another connection's lock;
        a write batch that still fails is retried, and callers waiting on it get
        ``StoreError`` once writes have failed for ``give_up_s``. With ``give_up_s=None``
        (the daemon) nothing gives up: opening, and every write, waits as long as a
        transient fault lasts, reported through ``faults["store"]`` (a private ``Faults``
        when none is given). A damaged file raises ``StoreCorrupt``, at once; ``check``
        looks at every page for damage first (``PRAGMA quick_check``, about 0.4 s per
        100 MB), else only what opening reads is looked at.

        Opening returns without waiting for a write; a first write that proves the file
        writable is queued at once (its failure opens the incident), and
        :meth:`wait_writable` waits for it.
        """
        faults = Faults() if faults is None else faults
        conn = await connect_patiently(
            path, busy_timeout_s, give_up_s, faults["store"], check=check
        )
        store = cls(conn, path, busy_timeout_s=busy_timeout_s, give_up_s=give_up_s, faults=faults)
        try:
            async with background_tasks() as tasks:
                tasks.create_task(store._writer.run(), name="wfe-store-writer")
                store._tasks = tasks
                store._probe = store._start_probe()
                yield store
                await store._flush_at_close()
        finally:
            store._tasks = None
            await store._close()

    @classmethod
    @asynccontextmanager
    async def open_read_only(
        cls, path: Path, *, busy_timeout_s: float = _READ_BUSY_TIMEOUT_S
    ) -> AsyncIterator[Store]:
        """Open the database at ``path`` for queries only (``runs``, ``show``).

        It never takes the write lock, switches the journal or migrates, so a daemon
        writing meanwhile neither waits for it nor makes it wait (WAL). A missing file
        reads as an empty database and is not created. Writes raise ``StoreError``.

        Raises:
            StoreError: the file cannot be read (locked for longer than
                ``busy_timeout_s`` when not in WAL mode), or its schema is older or newer
                than this program's.
            StoreCorrupt: the file is damaged.
        """
        store = cls(
            await connect_read_only(path, busy_timeout_s), path, busy_timeout_s=busy_timeout_s
        )
        store._writer.refuse(StoreError(f"database {path} is open read-only"))
        try:
            yield store
        finally:
            await store._close()

    @property
    def _conn(self) -> aiosqlite.Connection:
        return self._writer.conn

    async def wait_writable(self) -> None:
        """Return once a write has committed since opening: the file can be written.

        Raises:
            StoreError: writes kept failing for ``give_up_s`` (never when it is ``None``).
            StoreCorrupt: the file is damaged.
        """
        if self._tasks is None:  # open read-only: the write is refused
            await self._submit(_tx.touch)
            return
        probe = self._probe
        if probe is None or (probe.done.is_set() and probe.error is not None):
            probe = self._probe = self._start_probe()
        await probe.done.wait()  # the probe goes on when a caller stops waiting
        if probe.error is not None:
            raise probe.error

    def _start_probe(self) -> _Probe:
        assert self._tasks is not None
        probe = _Probe()
        self._tasks.create_task(self._run_probe(probe), name="wfe-store-probe")
        return probe

    async def _run_probe(self, probe: _Probe) -> None:
        """Queue a write that changes nothing; its outcome is for :meth:`wait_writable`."""
        try:
            await self._submit(_tx.touch)
        except asyncio.CancelledError:
            probe.error = StoreError(f"database {self._path} closed before a write committed")
            raise
        except Exception as exc:  # not raised here: a probe nobody waits for fails quietly
            probe.error = exc
        finally:
            probe.done.set()

    @property
    def fatal(self) -> StoreCorrupt | None:
        """The damage found in the file, once found (then every write fails with it)."""
        return self._writer.fatal

    async def wait_fatal(self) -> StoreCorrupt:
        """Return the error once the file is found damaged; until then, wait."""
        return await self._writer.wait_fatal()

    async def _flush_at_close(self) -> None:
        """Commit what is queued; when nothing gives up, wait only ``_CLOSE_WAIT_S`` for it.

        What is left unwritten then is logged: the database still holds a consistent
        prefix of what happened, and the next start resumes the runs it shows unfinished.
        """
        if self._give_up_s is not None or self.fatal is not None:
            await self.flush()
            return
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await self.flush()
        except TimeoutError:
            log.warning(
                STORE_UNWRITTEN,
                writes=self._writer.pending,
                error=self._incident.error,
                db_path=str(self._path),
            )

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True):  # an open connection would keep its thread
            await self._writer.close()

    async def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return await self._writer.submit(fn)

    def _enqueue(self, item: tuple[str, tuple[Any, ...]]) -> None:
        self._writer.enqueue(item)

    async def flush(self, *, durable: bool = False) -> None:
        """Wait until every write queued so far is committed (fsynced when ``durable``).

        Raises:
            StoreError: writes have failed for longer than ``give_up_s`` (the queued
                writes are kept and retried).
        """
        await self._writer.flush(durable=durable)

    @property
    def healthy(self) -> bool:
        """False while writes are failing: from a failed batch until one commits again."""
        return self._writer.healthy

    # -- watchers ------------------------------------------------------------------------

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Tell ``watcher`` every transition from now on; returns the function that stops it.

        Node events (RUNNING, then the final status) are told as their writes are queued,
        in queue order; a run's start once its id is known (before any of its nodes'
        events), its end and a file that never ran once committed (after all its nodes'
        events), so a watcher that reads the run back then finds it ended. Nodes a retry
        reuses, or an abandoned run skips, get no event of their own: the run's does.
        A watcher that raises is logged and kept; it must never await or block.
        """
        self._watchers = (*self._watchers, watcher)

        def unwatch() -> None:
            self._watchers = tuple(w for w in self._watchers if w is not watcher)

        return unwatch

    def _tell(self, event: StoreEvent) -> None:
        for watcher in self._watchers:
            try:
                watcher(event)
            except Exception:  # a watcher's bug must not fail the engine's transition
                log.exception(STORE_WATCHER_FAILED, kind=event.kind)

    def _tell_run(
        self,
        run_id: int,
        workflow: str | None,
        status: str,
        started_at: str | None,
        finished_at: str | None,
    ) -> None:
        data: RunEvent = {
            "run_id": run_id,
            "workflow": workflow,
            "status": status,
            "started_at": started_at,
            "finished_at": finished_at,
        }
        self._tell(StoreEvent("run", data))

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
        run_row = (name, started_at, source, source_path, definition, idempotency_key, os.getpid())
        run_id: int = await self._submit(
            partial(_tx.insert_run, run_row=run_row, nodes=list(nodes))
        )
        if run_id < 0:  # a negative id names the run that holds the key
            raise DuplicateRun(-run_id)
        if self._watchers:
            self._tell_run(run_id, name, "RUNNING", started_at, None)
        return run_id

    async def record_unrun(
        self,
        *,
        status: str,
        name: str,
        source: str | None,
        source_path: str | None,
        at: str,
        summary: RunSummary,
        duplicate_of: int | None = None,
    ) -> int:
        """Record a file that never ran (REJECTED or DUPLICATE); its run id, once durable.

        ``summary`` gets the new id as ``run_id`` and is stored as the result summary.
        """
        row = (name, status, at, at, source, source_path, duplicate_of, os.getpid())
        run_id: int = await self._submit(partial(_tx.insert_unrun, row=row, summary=summary))
        if self._watchers:
            self._tell_run(run_id, name, str(status), at, at)
        await self.flush(durable=True)
        return run_id

    def mark_settled(self, run_id: int, source_path: str | None = None) -> None:
        """Queue: the run's result is published (and its file moved out of processing, to
        ``source_path`` when given)."""
        self._enqueue(
            (
                "UPDATE workflowrun SET settled_at = ?,"
                " source_path = COALESCE(?, source_path) WHERE id = ?",
                (now_iso(), source_path, run_id),
            )
        )

    def node_running(self, run_id: int, node_id: str, started_at: str, attempts: int) -> None:
        """Queue: the node holds a slot and runs."""
        self._writer.enqueue_running(
            (run_id, node_id), (_NODE_RUNNING, (started_at, attempts, run_id, node_id))
        )
        if self._watchers:
            data: NodeEvent = {
                "run_id": run_id,
                "node_id": node_id,
                "status": "RUNNING",
                "attempts": attempts,
                "started_at": started_at,
                "finished_at": None,
                "error": None,
            }
            self._tell(StoreEvent("node", data))

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
        cause: str | None = None,
    ) -> None:
        """Queue: the node reached a final status (``output_json``: encoded, redacted;
        ``cause``: for a node skipped because of a failure, the node that failed)."""
        self._writer.enqueue_finished(
            (run_id, node_id),
            (
                _NODE_FINISHED,
                (
                    status,
                    started_at,
                    finished_at,
                    duration,
                    attempts,
                    output_json,
                    error,
                    reason,
                    cause,
                    run_id,
                    node_id,
                ),
            ),
        )
        if self._watchers:
            data: NodeEvent = {
                "run_id": run_id,
                "node_id": node_id,
                "status": str(status),
                "attempts": attempts,
                "started_at": started_at,
                "finished_at": finished_at,
                "error": error,
            }
            self._tell(StoreEvent("node", data))

    async def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        finished_at: str,
        duration: float | None,
        summary: RunSummary,
    ) -> None:
        """Record the run's final state and wait until it is durable (the node outputs in
        ``summary`` are kept in the node rows only; :meth:`get_run` puts them back)."""
        summary_text = _tx.summary_text(summary)
        self._enqueue((_RUN_FINISHED, (status, finished_at, duration, summary_text, run_id)))
        await self.flush(durable=True)
        if self._watchers:  # once durable: a watcher that reads the run back finds it ended
            workflow, started_at = summary["workflow"], summary["started_at"]
            self._tell_run(run_id, workflow, str(status), started_at, finished_at)

    # -- queries --------------------------------------------------------------------------

    async def list_runs(
        self, limit: int = 20, *, statuses: Iterable[str] = (), since: str | None = None
    ) -> list[RunListing]:
        """The newest runs first, without their nodes.

        ``statuses`` keeps runs in one of them; ``since`` (UTC ISO-8601, the stored
        shape) keeps runs started at or after it. ``error`` is the run's first error,
        else its first node error in file order as ``node: error``, else ``None``.
        """
        where, params = _run_filter(statuses=statuses, since=since)
        rows = await self._query(
            f"SELECT {_LISTING} FROM workflowrun{where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return cast(list[RunListing], rows)

    async def page_runs(
        self,
        limit: int,
        *,
        before: int | None = None,
        statuses: Iterable[str] = (),
        workflow: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[LinkedListing]:
        """A page of runs, newest first: those with an id below ``before`` (all when
        ``None``), as :meth:`list_runs` lists them, plus ``retry_of``.

        The page after one is the runs below its last id: it stays the same while new
        runs are added. ``workflow`` keeps runs of that name; ``since`` and ``until`` (UTC
        ISO-8601) keep runs started at or after the one and before the other.
        """
        where, params = _run_filter(
            statuses=statuses, workflow=workflow, since=since, until=until, before=before
        )
        rows = await self._query(
            f"SELECT {_LISTING}, retry_of FROM workflowrun{where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return cast(list[LinkedListing], rows)

    async def count_runs(
        self, *, workflow: str | None = None, since: str | None = None, until: str | None = None
    ) -> dict[str, int]:
        """How many runs have each status (only statuses some run has), filtered as
        :meth:`page_runs` filters."""
        where, params = _run_filter(workflow=workflow, since=since, until=until)
        rows = await self._query(
            f"SELECT status, COUNT(*) AS n FROM workflowrun{where} GROUP BY status ORDER BY status",
            params,
        )
        return {row["status"]: row["n"] for row in rows}

    async def get_run(self, run_id: int) -> RunRecord | None:
        """One run with its nodes in file order, or ``None``."""
        runs = await self._query(
            "SELECT id, name, status, source, source_path, started_at, finished_at, duration,"
            " idempotency_key, retry_of, duplicate_of, definition, result_summary"
            " FROM workflowrun WHERE id = ?",
            (run_id,),
        )
        if not runs:
            return None
        run = runs[0]
        for key in ("definition", "result_summary"):
            run[key] = json.loads(run[key]) if run[key] else None
        nodes = cast(
            list[NodeRecord],
            await self._query(
                "SELECT node_id, type, status, attempts, started_at, finished_at, duration,"
                f" result_data, error, reason, {CAUSE} AS cause FROM noderun WHERE workflow_id = ?"
                " ORDER BY id",
                (run_id,),
            ),
        )
        for node in nodes:
            node["result_data"] = json.loads(node["result_data"]) if node["result_data"] else None
        run["nodes"] = nodes
        _tx.restore_outputs(run["result_summary"], nodes)
        return cast(RunRecord, run)

    async def unfinished_runs(self) -> list[UnfinishedRun]:
        """Runs still RUNNING, oldest first: ``id``, ``source_path``, ``pid``."""
        rows = await self._query(
            "SELECT id, source_path, pid FROM workflowrun WHERE status = 'RUNNING' ORDER BY id"
        )
        return cast(list[UnfinishedRun], rows)

    async def run_for_source(self, source_path: str) -> RunRecord | None:
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

        status: str = await self._submit(
            partial(_tx.abandon_run, run_id=run_id, reason=reason, finished_at=finished_at)
        )
        if self._watchers:
            rows = await self._query(
                "SELECT name, started_at FROM workflowrun WHERE id = ?", (run_id,)
            )
            if rows:
                self._tell_run(run_id, rows[0]["name"], status, rows[0]["started_at"], finished_at)
        return status

    async def set_summary(self, run_id: int, summary: RunSummary) -> None:
        """Store a run's result summary, durably."""
        self._enqueue(
            (
                "UPDATE workflowrun SET result_summary = ? WHERE id = ?",
                (_tx.summary_text(summary), run_id),
            )
        )
        await self.flush(durable=True)

    async def unsettled_runs(self) -> list[UnsettledRun]:
        """Finished runs of a file whose result is not marked published: ``id``, ``source_path``."""
        rows = await self._query(
            "SELECT id, source_path FROM workflowrun WHERE settled_at IS NULL"
            " AND status != 'RUNNING' AND source_path IS NOT NULL ORDER BY id"
        )
        return cast(list[UnsettledRun], rows)

    # -- cancel requests, retries, retention ---------------------------------------

    async def request_cancel(self, run_id: int, requested_at: str) -> CancelTarget | None:
        """Ask for run ``run_id`` to be cancelled if it is RUNNING; the run's ``status`` and
        ``pid`` (``None`` for no such run). A repeated request keeps the first one's time."""

        found: CancelTarget | None = await self._submit(
            partial(_tx.request_cancel, run_id=run_id, requested_at=requested_at)
        )
        return found

    async def cancel_requests(self) -> list[CancelRequest]:
        """Pending cancel requests, oldest first: ``run_id`` and the run's ``status``
        (``None`` when the run no longer exists)."""
        rows = await self._query(
            "SELECT c.run_id, w.status FROM cancel_request AS c"
            " LEFT JOIN workflowrun AS w ON w.id = c.run_id ORDER BY c.requested_at"
        )
        return cast(list[CancelRequest], rows)

    def drop_cancel_requests(self, run_ids: Iterable[int]) -> None:
        """Queue: these cancel requests are handled."""
        for run_id in run_ids:
            self._enqueue(("DELETE FROM cancel_request WHERE run_id = ?", (run_id,)))

    async def take_cancel_request(self, run_id: int) -> bool:
        """Delete the cancel request of ``run_id``; whether there was one."""

        taken: bool = await self._submit(partial(_tx.take_cancel_request, run_id=run_id))
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
        source_path: str | None = None,
    ) -> int:
        """Insert a RUNNING run linked to run ``retry_of``, in one transaction; its id.

        Its nodes (``(node_id, type)``) start PENDING, except those that were SUCCESS in run
        ``retry_of`` with the same type: they are copied (output, times, attempts) with
        ``reused_reason`` as their reason. ``idempotency_key`` is taken only when no run
        holds it (e.g. the original FAILED); otherwise the retry runs without a key.
        ``source_path`` is the file the daemon runs it from (a retry handed to the daemon).
        """
        run_row = (name, started_at, source, source_path, definition, idempotency_key, retry_of)
        run_id: int = await self._submit(
            partial(
                _tx.insert_retry, run_row=run_row, nodes=list(nodes), reused_reason=reused_reason
            )
        )
        if self._watchers:
            self._tell_run(run_id, name, "RUNNING", started_at, None)
        return run_id

    async def prune_runs(self, before: str, batch: int = 500) -> tuple[int, int]:
        """Delete runs that finished before ``before`` (ISO-8601 UTC) with their nodes; never
        RUNNING ones, nor those of a file whose result is not published yet. ``batch`` runs
        per transaction, so the writer never holds a long one. Returns ``(runs, nodes)``."""

        runs = nodes = 0
        while True:
            pruned: tuple[int, int] = await self._submit(
                partial(_tx.prune_batch, before=before, batch=batch)
            )
            if pruned[0] == 0:
                return runs, nodes
            runs, nodes = runs + pruned[0], nodes + pruned[1]

    async def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` (a ``transactions``-style function) in the writer's next batch; its
        result once committed. For the store's own families of writes (``firings``)."""
        return await self._submit(fn)

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of one read statement, as dicts."""
        return await self._query(sql, params)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            # One round trip: the writer may close the connection between two.
            rows: list[dict[str, Any]] = await run_in_thread(
                await self._writer.connection(), _rows, sql, params
            )
            return rows
        except (sqlite3.Error, OSError) as exc:
            if fault_of(exc) is Fault.DAMAGED:
                raise self._writer.declare_damaged(exc) from exc
            raise StoreError(f"database query failed: {exc}") from exc


_LISTING = (
    "id, name, status, source, started_at, finished_at, duration,"
    " COALESCE(json_extract(result_summary, '$.errors[0]'), (SELECT node_id || ': ' ||"
    " error FROM noderun WHERE workflow_id = workflowrun.id AND error IS NOT NULL"
    " ORDER BY id LIMIT 1)) AS error"
)
"""A run's columns as ``RunListing`` names them."""


def _run_filter(
    *,
    statuses: Iterable[str] = (),
    workflow: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: int | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause (or ``""``) that keeps the runs asked for, and its parameters."""
    wanted = tuple(dict.fromkeys(statuses))
    clauses = [f"status IN ({', '.join('?' * len(wanted))})"] if wanted else []
    params: list[Any] = list(wanted)
    # Same-offset ISO stamps sort as text.
    for clause, value in (
        ("name = ?", workflow),
        ("started_at >= ?", since),
        ("started_at < ?", until),
        ("id < ?", before),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _rows(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
