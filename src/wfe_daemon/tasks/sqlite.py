"""``save_db``: load a CSV file into a SQLite table, in one transaction.

The table's columns are the CSV header, each declared ``TEXT`` (the affinity the
``sqlite3`` shell's ``.import`` gives too: values are stored as the text the file holds).
Table and column names must be plain identifiers (:data:`IDENTIFIER`) and are always
double-quoted; values are always bound, never spliced into SQL.

The whole load is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) on a database in
WAL mode, so a reader sees the table as it was before, or complete; never empty or half
filled. In ``replace`` mode the table is dropped and re-created inside that transaction.
Rows go in through ADBC's SQLite driver, which binds Arrow batches read by
:mod:`~wfe_daemon.tasks.csv.arrow` to one prepared ``INSERT`` in C: a million rows load
at about the speed of the ``sqlite3`` shell's ``.import``. When Arrow cannot read the
file, the load goes back to a savepoint and takes the rows of the reference reader
(:mod:`~wfe_daemon.tasks.csv.io`), which names the line of a bad row.

Like the CSV tasks, the work runs in a worker thread that checks for cancellation between
batches and once more right before ``COMMIT``; a cancelled load is rolled back, and the
node ends (or retries) only once the thread has.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.task import Output, Params, TaskContext
from wfe_daemon.tasks._threads import run_blocking, stop_if
from wfe_daemon.tasks.csv import arrow
from wfe_daemon.tasks.csv.io import (
    DELIMITER_SCHEMA,
    FIELD_LIMIT,
    batches,
    even_rows,
    open_csv,
)

if TYPE_CHECKING:
    import pyarrow as pa

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What a table or column name must match (then it is double-quoted anyway)."""

MODES = ("append", "replace")
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
            "source": {
                "type": "string",
                "minLength": 1,
                "description": "Path of the CSV file, relative to data_dir.",
            },
            "database": {
                "type": "string",
                "minLength": 1,
                "description": (
                    "Path of the SQLite database, relative to data_dir (created if missing)."
                ),
            },
            "table": {
                "type": "string",
                "pattern": f"^{IDENTIFIER.pattern}$",
                "description": (
                    "Table to load; created if missing. Letters, digits and _, at most 64."
                ),
            },
            "mode": {
                "enum": list(MODES),
                "default": "append",
                "description": (
                    "append: add the rows (the table's columns must match the header); "
                    "replace: the table holds exactly the file's rows afterwards."
                ),
            },
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
        "The source is missing, empty, not UTF-8 or malformed, a row has the wrong width, or "
        f"a field is longer than {FIELD_LIMIT:,} characters.",
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
    name, table, delimiter = params["source"], params["table"], params.get("delimiter", ",")
    with open_csv(source, name, delimiter) as (header, _):
        columns = [check_identifier(column, f"{name}: column") for column in header]
    lowered = [c.lower() for c in columns]
    twice = next((c for i, c in enumerate(columns) if lowered.index(c.lower()) != i), None)
    if twice is not None:  # SQLite names are case-insensitive
        raise TaskFailed(f"{name}: column {twice!r} appears twice (names ignore case)")
    database.parent.mkdir(parents=True, exist_ok=True)
    import adbc_driver_manager  # here, not at import: loading the registry stays cheap

    try:
        with _Database(database) as db:
            db.run("PRAGMA journal_mode=WAL")  # readers keep the old rows until COMMIT
            db.run("PRAGMA synchronous=NORMAL")  # durable at checkpoints; never corrupt
            db.run(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            db.run("BEGIN IMMEDIATE")
            try:
                _prepare_table(db, table, columns, params.get("mode", "append"))
                db.run("SAVEPOINT arrow")
                try:
                    written = db.ingest(table, arrow.batches(source, header, delimiter, cancelled))
                except arrow.Fallback:  # the reference reader names the problem
                    db.run("ROLLBACK TO arrow")
                    written = db.ingest(table, _row_batches(source, name, delimiter, cancelled))
                stop_if(cancelled)  # a timeout during the last batch must not commit it
                db.run("COMMIT")
            except BaseException:
                db.run("ROLLBACK")
                raise
    except adbc_driver_manager.Error as exc:
        raise TaskFailed(f"{params['database']}: {_sqlite_message(exc)}") from exc
    return {"database": params["database"], "table": table, "rows_written": written}


def _sqlite_message(exc: Exception) -> str:
    """An ADBC error's first line, without its status code and driver tag."""
    lines = str(exc).strip().splitlines()
    return _ADBC_PREFIX.sub("", lines[0]) if lines else type(exc).__name__


_ADBC_PREFIX = re.compile(r"^(?:[A-Z_]+: )?(?:\[SQLite\] )?")


class _Database:
    """One ADBC connection to a SQLite file: statements, queries and bulk ingest."""

    def __init__(self, path: Path) -> None:
        import adbc_driver_manager
        import adbc_driver_sqlite

        self._database = adbc_driver_sqlite.connect(str(path))
        try:
            self._conn = adbc_driver_manager.AdbcConnection(self._database)
        except BaseException:
            self._database.close()
            raise

    def __enter__(self) -> _Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()
        self._database.close()

    def _statement(self) -> Any:
        import adbc_driver_manager

        return adbc_driver_manager.AdbcStatement(self._conn)

    def run(self, sql: str) -> None:
        statement = self._statement()
        try:
            statement.set_sql_query(sql)
            statement.execute_update()
        finally:
            statement.close()

    def column(self, sql: str) -> list[Any]:
        """The first column of a query's rows."""
        import pyarrow as pa

        statement = self._statement()
        try:
            statement.set_sql_query(sql)
            handle, _ = statement.execute_query()
            result = pa.RecordBatchReader.from_stream(handle).read_all()
        finally:
            statement.close()
        return result.column(0).to_pylist() if result.num_columns else []

    def ingest(self, table: str, batches: Iterator[pa.RecordBatch]) -> int:
        """Append every batch to ``table`` (columns matched by name); return the row count.

        An exception raised while producing the batches (:class:`arrow.Fallback`, a
        ``TaskFailed``, the cancellation) is re-raised as itself, not as a SQLite error.
        """
        import adbc_driver_manager
        import pyarrow as pa

        failure: list[BaseException] = []
        rows = 0

        def source() -> Iterator[pa.RecordBatch]:
            nonlocal rows
            try:
                for batch in batches:
                    rows += batch.num_rows
                    yield batch
            except BaseException as exc:
                failure.append(exc)
                raise

        statement = self._statement()
        try:
            peeked = _peek(source())
            if peeked is None:
                return 0
            schema, stream = peeked
            statement.set_options(
                **{"adbc.ingest.target_table": table, "adbc.ingest.mode": "adbc.ingest.mode.append"}
            )
            statement.bind_stream(pa.RecordBatchReader.from_batches(schema, stream))
            statement.execute_update()
        except adbc_driver_manager.Error:
            if failure:
                raise failure[0] from None
            raise
        finally:
            statement.close()
        return rows


def _peek(batches: Iterator[pa.RecordBatch]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]] | None:
    """The schema of the first batch and every batch, or ``None`` when there is none."""
    first = next(batches, None)
    if first is None:
        return None
    return first.schema, chain([first], batches)


def _row_batches(
    source: Path, name: str, delimiter: str, cancelled: threading.Event
) -> Iterator[pa.RecordBatch]:
    """The rows of the reference reader, as Arrow batches (a bad row fails with its line)."""
    import pyarrow as pa

    with open_csv(source, name, delimiter) as (header, reader):
        for before, batch in batches(reader):
            stop_if(cancelled)
            rows = even_rows(name, before, batch, len(header))
            if rows:
                yield pa.record_batch(
                    [pa.array(c, pa.string()) for c in zip(*rows, strict=True)], names=header
                )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)  # names passed check_identifier


def _prepare_table(db: _Database, table: str, columns: list[str], mode: str) -> None:
    """Create the table (dropping it first in replace mode) or check its columns match."""
    if mode == "replace":
        db.run(f'DROP TABLE IF EXISTS "{table}"')
    existing = db.column(f"SELECT name FROM pragma_table_info('{table}')")  # checked name
    if not existing:
        db.run(f'CREATE TABLE "{table}" ({", ".join(f"{_quoted([c])} TEXT" for c in columns)})')
    elif sorted(c.lower() for c in existing) != sorted(c.lower() for c in columns):
        raise TaskFailed(
            f"table {table!r} has columns {', '.join(existing)}; the file has "
            f"{', '.join(columns)} (use mode 'replace' to redefine it)"
        )


TASKS = (SaveDbTask,)
