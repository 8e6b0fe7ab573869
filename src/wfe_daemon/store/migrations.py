"""The database schema: forward migrations, one ``user_version`` step per transaction."""

from __future__ import annotations

import sqlite3
from contextlib import suppress

from wfe_daemon.core.rules import FAILED_PREFIX
from wfe_daemon.errors import StoreError

SCHEMA_VERSION = 5

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
    # 3 -> 4: a skip's cause in its own column (the node whose failure skipped it), taken
    # for older rows from their reason; substr, not LIKE, which would read "_" as a wildcard.
    """
    ALTER TABLE noderun ADD COLUMN cause TEXT;
    UPDATE noderun SET cause = substr(reason, {PREFIX_LENGTH} + 1)
        WHERE substr(reason, 1, {PREFIX_LENGTH}) = '{FAILED_PREFIX}';
    """.replace("{PREFIX_LENGTH}", str(len(FAILED_PREFIX))).replace(
        "{FAILED_PREFIX}", FAILED_PREFIX
    ),
    # 4 -> 5: schedules. A firing is one slot of one schedule, recorded before its run
    # exists (``run_id`` is set once it does); the unique index makes each slot fire once.
    # ``schedule_state`` holds, per loaded schedule, the instant its slots count from.
    """
    CREATE TABLE firing (
        id INTEGER PRIMARY KEY, schedule TEXT NOT NULL, slot TEXT NOT NULL,
        fired_at TEXT NOT NULL, outcome TEXT NOT NULL, path TEXT,
        run_id INTEGER REFERENCES workflowrun(id) ON DELETE SET NULL
    );
    CREATE UNIQUE INDEX firing_by_slot ON firing(schedule, slot);
    CREATE INDEX firing_by_run ON firing(run_id);
    CREATE TABLE schedule_state (
        schedule TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, since TEXT NOT NULL
    );
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION

CAUSE = (
    f"COALESCE(cause, CASE WHEN substr(reason, 1, {len(FAILED_PREFIX)}) = '{FAILED_PREFIX}'"
    f" THEN substr(reason, {len(FAILED_PREFIX)} + 1) END)"
)
"""A node's ``cause`` as read: the column, or for a row written without it (by a daemon of
schema 3 still running while a newer command migrated the file) taken from the reason as
the migration does."""


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema forward to ``SCHEMA_VERSION``, one step per transaction.

    Safe against other processes migrating the same file at once: each step re-reads
    ``user_version`` inside its ``BEGIN IMMEDIATE`` (which holds the write lock), so a
    step another process already applied is skipped rather than applied twice.

    Raises:
        StoreError: the file's schema is newer than this program's.
    """
    # The common case, an up-to-date file, takes no write lock (``runs`` and ``show`` stay
    # read-only while a daemon writes).
    if _checked_version(db) == SCHEMA_VERSION:
        return
    while _step(db):
        pass


def _checked_version(db: sqlite3.Connection) -> int:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this program's {SCHEMA_VERSION}"
        )
    return int(version)


def _step(db: sqlite3.Connection) -> bool:
    """Apply the next migration under the write lock; False when there was none left."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _checked_version(db)
        if version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk)
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return version < SCHEMA_VERSION
