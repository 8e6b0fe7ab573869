"""``save_db``: load a CSV file into a SQLite table, in one transaction.

The table's columns are the CSV header, each declared ``TEXT`` (the affinity the
``sqlite3`` shell's ``.import`` gives too: values are stored as the text the file holds).
Table and column names must be plain identifiers (:data:`IDENTIFIER`) and are always
double-quoted; values are always bound, never spliced into SQL.

The whole load is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) on a database in
WAL mode, so a reader sees the table as it was before, or complete; never empty or half
filled. In ``replace`` mode the table is dropped and re-created inside that transaction.
Rows go in through ``executemany`` with many rows per ``INSERT`` statement, which is what
keeps a million rows near the speed of the ``sqlite3`` shell's ``.import``.

Like the CSV tasks, the work runs in a worker thread that checks for cancellation between
batches and once more right before ``COMMIT``; a cancelled load is rolled back, and the
node ends (or retries) only once the thread has.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from wfe_daemon.errors import TaskFailed
from wfe_daemon.registry import Output, Params, TaskContext
from wfe_daemon.tasks._csvio import DELIMITER_SCHEMA, batches, even_rows, open_csv
from wfe_daemon.tasks._threads import run_blocking, stop_if

if TYPE_CHECKING:
    import sqlite3

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What a table or column name must match (then it is double-quoted anyway)."""

MODES = ("append", "replace")
MAX_ROWS_PER_STATEMENT = 100
MAX_VARIABLES = 999  # the lowest SQLITE_MAX_VARIABLE_NUMBER of any SQLite build
BUSY_TIMEOUT_S = 10.0


def check_identifier(name: str, what: str) -> str:
    """``name`` if it is a safe SQL identifier, else a ``TaskFailed`` naming it."""
    if not isinstance(name, str) or IDENTIFIER.fullmatch(name) is None:
        raise TaskFailed(
            f"{what} {name!r} is not a valid name: use letters, digits and _ "
            "(not first), at most 64 characters"
        )
    if name.lower().startswith("sqlite_"):
        raise TaskFailed(f"{what} {name!r}: names starting with sqlite_ are reserved")
    return name


class SaveDbTask:
    """Loads a CSV file into a SQLite table: appended, or replacing it atomically."""

    type: ClassVar[str] = "save_db"
    display_name: ClassVar[str] = "Save to SQLite"
    description: ClassVar[str] = (
        "Loads a CSV file into a SQLite table (TEXT columns named after the header) in one "
        "transaction; 'replace' swaps the table's rows atomically."
    )
    category: ClassVar[str] = "data"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "source": {"type": "string", "minLength": 1,
                       "description": "Path of the CSV file, relative to data_dir."},
            "database": {"type": "string", "minLength": 1, "description": (
                "Path of the SQLite database, relative to data_dir (created if missing)."
            )},
            "table": {"type": "string", "pattern": f"^{IDENTIFIER.pattern}$", "description": (
                "Table to load; created if missing. Letters, digits and _, at most 64."
            )},
            "mode": {"enum": list(MODES), "default": "append", "description": (
                "append: add the rows (the table's columns must match the header); "
                "replace: the table holds exactly the file's rows afterwards."
            )},
            "delimiter": DELIMITER_SCHEMA,
        },
        "required": ["source", "database", "table"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None
    output_doc: ClassVar[dict[str, str]] = {
        "database": "The database param, as given.",
        "table": "The table loaded.",
        "rows_written": "Rows inserted.",
    }
    failure_doc: ClassVar[tuple[str, ...]] = (
        "The table name, or a header column, is not a plain identifier (or starts with sqlite_).",
        "The source is missing, empty, not UTF-8 or malformed, or a row has the wrong width.",
        "append: the existing table's columns differ from the header.",
        "A SQLite error (locked for longer than 10 s, not a database...). Nothing of the "
        "load is kept after any failure.",
        "source or database leads out of data_dir, or is the daemon's own database.",
    )

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        check_identifier(params["table"], "table")
        if params.get("mode", "append") not in MODES:
            raise TaskFailed(f"mode: must be 'append' or 'replace', got {params['mode']!r}")
        source = ctx.path(params["source"], param="source")
        database = ctx.path(params["database"], param="database")
        return await run_blocking(_save, source, database, params)


def _save(
    source: Path, database: Path, params: Params, cancelled: threading.Event
) -> dict[str, Any]:
    import sqlite3  # here, not at import: loading the registry stays cheap

    name, table = params["source"], params["table"]
    with open_csv(source, name, params.get("delimiter", ",")) as (header, reader):
        columns = [check_identifier(column, f"{name}: column") for column in header]
        lowered = [c.lower() for c in columns]
        twice = next((c for i, c in enumerate(columns) if lowered.index(c.lower()) != i), None)
        if twice is not None:  # SQLite names are case-insensitive
            raise TaskFailed(f"{name}: column {twice!r} appears twice (names ignore case)")
        database.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise TaskFailed(f"{params['database']}: cannot open: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # readers keep the old rows until COMMIT
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; never corrupt
            conn.execute("BEGIN IMMEDIATE")
            try:
                _prepare_table(conn, table, columns, params.get("mode", "append"))
                written = _insert(conn, table, columns, name, reader, cancelled)
                stop_if(cancelled)  # a timeout during the last batch must not commit it
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
        except sqlite3.Error as exc:
            raise TaskFailed(f"{params['database']}: {exc}") from exc
        finally:
            conn.close()
    return {"database": params["database"], "table": table, "rows_written": written}


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)  # names passed check_identifier


def _prepare_table(conn: sqlite3.Connection, table: str, columns: list[str], mode: str) -> None:
    """Create the table (dropping it first in replace mode) or check its columns match."""
    if mode == "replace":
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    existing = [row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))]
    if not existing:
        declared = ", ".join(f'"{column}" TEXT' for column in columns)
        conn.execute(f'CREATE TABLE "{table}" ({declared})')
    elif sorted(c.lower() for c in existing) != sorted(c.lower() for c in columns):
        raise TaskFailed(
            f"table {table!r} has columns {', '.join(existing)}; the file has "
            f"{', '.join(columns)} (use mode 'replace' to redefine it)"
        )


def _insert(
    conn: sqlite3.Connection,
    table: str,
    columns: list[str],
    name: str,
    reader: Any,
    cancelled: threading.Event,
) -> int:
    """Insert every row of ``reader``; return how many."""
    width = len(columns)
    per = max(1, min(MAX_ROWS_PER_STATEMENT, MAX_VARIABLES // width))
    row_marks = "(" + ", ".join("?" * width) + ")"
    head = f'INSERT INTO "{table}" ({_quoted(columns)}) VALUES '
    many, one = head + ", ".join([row_marks] * per), head + row_marks
    written = 0
    for before, batch in batches(reader):
        stop_if(cancelled)
        rows = even_rows(name, before, batch, width)
        whole = len(rows) - len(rows) % per
        if whole:
            conn.executemany(many, _grouped(islice(rows, whole), per))
        if whole < len(rows):
            conn.executemany(one, rows[whole:])
        written += len(rows)
    return written


def _grouped(rows: Iterable[Sequence[str]], per: int) -> Iterator[list[str]]:
    """``per`` rows at a time, flattened into one parameter list."""
    return map(list, map(chain.from_iterable, zip(*[iter(rows)] * per, strict=False)))


TASKS = (SaveDbTask,)
