"""CSV reading shared by the CSV tasks and ``save_db``: batches, line numbers, threads.

The file work of those tasks runs in a worker thread
(:func:`~wfe_daemon.tasks._threads.run_blocking`) and checks for cancellation between
batches of :data:`BATCH_ROWS` rows, so memory stays flat and a cancelled node stops soon.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from wfe_daemon.errors import TaskFailed

Row = list[str]

DELIMITER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1,
    "not": {"enum": ['"', "\n", "\r"]},
    "default": ",",
    "description": "The field separator of the input (one character).",
}
"""The ``delimiter`` param of every task that reads CSV."""

BATCH_ROWS = 4096
"""Rows read, checked and written at a time (also how often cancellation is checked)."""

FIELD_LIMIT = 10 * 1024 * 1024
"""The longest field (in characters) the CSV tasks read, on either path: 10 MiB, so any
field of 10 MB, whatever its characters. A longer one fails the node, naming its line."""


@functools.cache
def _allow_long_fields() -> None:
    """Raise the stdlib reader's field limit (128 KiB by default) to :data:`FIELD_LIMIT`.

    The limit is process-global (``csv.field_size_limit``) and no reader takes one of its
    own, so it is set once, here, and only ever raised: code elsewhere in the process that
    reads CSV sees longer fields accepted, never a field refused that it read before.
    """
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)


@contextmanager
def open_csv(file: Path, name: str, delimiter: str) -> Iterator[tuple[Row, Any]]:
    """Open ``file`` (``name`` as the user gave it) and yield its header and csv reader.

    Raises:
        TaskFailed: the file is missing, empty, not UTF-8, malformed, or its header
            repeats a column.
    """
    try:
        handle = file.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise TaskFailed(f"{name}: no such file in data_dir") from exc
    except IsADirectoryError as exc:
        raise TaskFailed(f"{name}: is a directory, not a CSV file") from exc
    except OSError as exc:
        raise TaskFailed(f"{name}: cannot open: {exc.strerror}") from exc
    _allow_long_fields()
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise TaskFailed(f"{name}: no header row (the file or its first line is empty)")
            seen: set[str] = set()
            for column in header:
                if column in seen:
                    raise TaskFailed(f"{name}: the header repeats column {column!r}")
                seen.add(column)
            yield header, reader
        except csv.Error as exc:
            raise TaskFailed(f"{name}: line {reader.line_num}: {_problem(exc)}") from exc
        except UnicodeDecodeError as exc:
            raise TaskFailed(f"{name}: after line {reader.line_num}: not UTF-8 text") from exc


def _problem(exc: csv.Error) -> str:
    if str(exc).startswith("field larger than field limit"):
        return (
            f"a field is longer than {csv.field_size_limit():,} characters, "
            "the limit of the CSV tasks"
        )
    return f"malformed CSV: {exc}"


def batches(reader: Any) -> Iterator[tuple[int, list[Row]]]:
    """Yield ``(line before the batch, rows)`` until the reader is exhausted."""
    while True:
        before = reader.line_num
        batch = list(islice(reader, BATCH_ROWS))
        if not batch:
            return
        yield before, batch


def breaks(text: str) -> int:
    """Line breaks in a cell (a quoted field can span lines)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def line_of(before: int, batch: Sequence[Row], position: int) -> int:
    """The file line where ``batch[position]`` starts (blank rows and quoted breaks counted)."""
    line = before + 1
    for row in islice(batch, position):
        line += 1 + sum(map(breaks, row))
    return line


def even_rows(name: str, before: int, batch: list[Row], width: int) -> list[Row]:
    """``batch`` without blank rows; a row of another width than the header fails."""
    widths = set(map(len, batch))
    if widths == {width}:
        return batch
    for position, row in enumerate(batch):
        if row and len(row) != width:
            line = line_of(before, batch, position)
            raise TaskFailed(f"{name}: line {line}: {len(row)} fields, the header has {width}")
    return [row for row in batch if row]
