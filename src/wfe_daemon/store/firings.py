"""The firings of schedules: one row per slot of a schedule, under a unique index.

A slot is recorded ``pending`` (with the path its file will take in ``inbox/processing/``)
before anything of its run exists, then ``fired`` with its run id once the run is recorded;
a slot the ``overlap: skip`` policy passed over is ``skipped``, and one that could not be
recovered ``lost``. Slot times are UTC ISO-8601 text, which sorts as time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from wfe_daemon.store.database import Store

__all__ = [
    "FIRED",
    "LOST",
    "PENDING",
    "SKIPPED",
    "Firing",
    "forget_schedule",
    "last_firings",
    "last_slots",
    "link_run",
    "pending_firings",
    "prune_firings",
    "record_firings",
    "running_firings",
    "schedule_states",
    "set_schedule_states",
]

PENDING, FIRED, SKIPPED, LOST = "pending", "fired", "skipped", "lost"


@dataclass(frozen=True, slots=True)
class Firing:
    """One recorded slot: ``outcome`` is one of the module's four; ``run_status`` is the
    status of its run (``None`` when it has none)."""

    schedule: str
    slot: str
    outcome: str
    path: str | None
    run_id: int | None
    run_status: str | None = None


def _insert(
    db: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str, str | None]]
) -> list[bool]:
    inserted = []
    for row in rows:
        cursor = db.execute(
            "INSERT OR IGNORE INTO firing (schedule, slot, fired_at, outcome, path)"
            " VALUES (?, ?, ?, ?, ?)",
            row,
        )
        inserted.append(cursor.rowcount == 1)
    return inserted


async def record_firings(
    store: Store, rows: Sequence[tuple[str, str, str, str, str | None]]
) -> list[bool]:
    """Insert ``(schedule, slot, fired_at, outcome, path)`` rows in one transaction,
    durably; for each, whether it was new (``False``: that slot was recorded already)."""
    inserted: list[bool] = await store.write(partial(_insert, rows=list(rows)))
    await store.flush(durable=True)
    return inserted


async def link_run(
    store: Store, schedule: str, slot: str, run_id: int | None, outcome: str
) -> None:
    """Record the outcome of a pending slot (and its run, once recorded)."""
    await store.write(
        partial(
            _execute,
            sql="UPDATE firing SET run_id = ?, outcome = ? WHERE schedule = ? AND slot = ?",
            params=(run_id, outcome, schedule, slot),
        )
    )


def _execute(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
    db.execute(sql, params)


_FIRING = (
    "SELECT f.schedule, f.slot, f.outcome, f.path, f.run_id, w.status AS run_status"
    " FROM firing AS f LEFT JOIN workflowrun AS w ON w.id = f.run_id"
)


def _firings(rows: list[dict[str, object]]) -> list[Firing]:
    return [Firing(**row) for row in rows]  # type: ignore[arg-type]


async def pending_firings(store: Store) -> list[Firing]:
    """Slots recorded whose run was not recorded (a crash in between), oldest first."""
    rows = await store.query(_FIRING + " WHERE f.outcome = ? ORDER BY f.id", (PENDING,))
    return _firings(rows)


async def running_firings(store: Store) -> list[Firing]:
    """Slots whose run is still RUNNING (for the ``overlap`` policies)."""
    rows = await store.query(_FIRING + " WHERE w.status = 'RUNNING' ORDER BY f.id")
    return _firings(rows)


async def last_slots(store: Store) -> dict[str, str]:
    """The latest slot recorded per schedule (any outcome)."""
    rows = await store.query("SELECT schedule, max(slot) AS slot FROM firing GROUP BY schedule")
    return {str(row["schedule"]): str(row["slot"]) for row in rows}


async def last_firings(store: Store) -> dict[str, Firing]:
    """Per schedule, its latest slot that has a run, with that run's status."""
    rows = await store.query(
        _FIRING + " WHERE f.id IN (SELECT max(id) FROM firing WHERE run_id IS NOT NULL"
        " GROUP BY schedule)"
    )
    return {firing.schedule: firing for firing in _firings(rows)}


async def schedule_states(store: Store) -> dict[str, tuple[str, str]]:
    """Per schedule: its fingerprint and the instant (UTC ISO) its slots count from."""
    rows = await store.query("SELECT schedule, fingerprint, since FROM schedule_state")
    return {str(r["schedule"]): (str(r["fingerprint"]), str(r["since"])) for r in rows}


async def set_schedule_states(store: Store, rows: Sequence[tuple[str, str, str]]) -> None:
    """Remember, for each ``(schedule, fingerprint, since)``, that the schedule's slots count
    from ``since`` under ``fingerprint`` (one transaction)."""
    await store.write(partial(_replace_states, rows=list(rows)))


def _replace_states(db: sqlite3.Connection, rows: list[tuple[str, str, str]]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO schedule_state (schedule, fingerprint, since) VALUES (?, ?, ?)",
        rows,
    )


async def forget_schedule(store: Store, schedule: str) -> None:
    """A schedule's file is gone: its slots no longer count (its firings stay history)."""
    await store.write(
        partial(_execute, sql="DELETE FROM schedule_state WHERE schedule = ?", params=(schedule,))
    )


def _prune_batch(db: sqlite3.Connection, before: str, batch: int) -> int:
    # A schedule's latest slot stays: catch-up counts from it.
    return db.execute(
        "DELETE FROM firing WHERE id IN (SELECT id FROM firing AS f WHERE f.slot < ?1"
        " AND f.outcome != 'pending'"
        " AND f.slot < (SELECT max(slot) FROM firing AS g WHERE g.schedule = f.schedule)"
        " LIMIT ?2)",
        (before, batch),
    ).rowcount


async def prune_firings(store: Store, before: str, batch: int = 500) -> int:
    """Delete the slots older than ``before`` (UTC ISO), but each schedule's latest and
    those still pending, ``batch`` per transaction; how many."""
    pruned = 0
    while count := await store.write(partial(_prune_batch, before=before, batch=batch)):
        pruned += count
    return pruned
