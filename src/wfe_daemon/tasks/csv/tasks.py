"""``validate_csv`` and ``transform_simple``: streaming checks and transforms of CSV files.

Both work in a worker thread (the event loop never blocks), a batch at a time, so memory
stays flat whatever the file's size. Each first takes the fast path of
:mod:`~wfe_daemon.tasks.csv.arrow` (Arrow's reader and compute kernels, column-wise);
when Arrow rejects the file or a cell, the reference path here reads it again row by row
with the stdlib :mod:`csv` module and reports the line, column and value.

Files are read as UTF-8 (a byte-order mark is skipped); the first line is the header.
Blank lines are skipped. A line number is the file line where the record starts (the
header is line 1; a quoted field may span lines). The output of ``transform_simple`` is
comma-separated, a cell quoted only when it holds a comma, a quote or a line break.

Cancellation: a thread cannot be killed. When the node is cancelled (its timeout, a
shutdown), :func:`run_blocking` sets a :class:`threading.Event` that the loops check
between batches (and before publishing the output), so the thread stops soon after; a
half-written output is discarded.

``save_db`` (:mod:`wfe_daemon.tasks.sqlite`) shares the reading helpers.
"""

from __future__ import annotations

import csv
import functools
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any, ClassVar

from wfe_daemon.core.refs import contains_ref
from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.task import Output, Params, TaskContext
from wfe_daemon.tasks._paths import atomic_write
from wfe_daemon.tasks._threads import run_blocking, stop_if
from wfe_daemon.tasks.csv import arrow
from wfe_daemon.tasks.csv.io import (
    DELIMITER_SCHEMA,
    FIELD_LIMIT,
    Row,
    batches,
    breaks,
    even_rows,
    line_of,
    open_csv,
)
from wfe_daemon.tasks.csv.plan import EDITS, Plan, build_plan
from wfe_daemon.tasks.csv.types import (
    ARTICLE,
    CHECKS,
    OPS,
    TYPE_NAMES,
    cast_column,
    predicate,
)

_PATH_DOC = "Path of the CSV file, relative to data_dir."
_COLUMNS: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
_TYPES: dict[str, Any] = {"type": "object", "additionalProperties": {"enum": list(TYPE_NAMES)}}

# -- validate_csv -------------------------------------------------------------------------


@dataclass(slots=True)
class _Errors:
    """The invalid cells found so far: all counted, the first ``limit`` kept."""

    limit: int
    count: int = 0
    rows: int = 0
    kept: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, column: str | None, value: str, error: str) -> None:
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append({"line": line, "column": column, "value": value, "error": error})

    def message(self, name: str) -> str:
        shown = "; ".join(
            f"line {e['line']}"
            + (f", column {e['column']!r}" if e["column"] is not None else "")
            + f": {e['value'][:80]!r} {e['error']}"
            for e in self.kept
        )
        more = f" (first {len(self.kept)} shown)" if self.count > len(self.kept) else ""
        return f"{name}: {self.count} invalid value(s) in {self.rows} row(s){more}: {shown}"


class ValidateCsvTask:
    """Checks a CSV file's header and typed columns, row by row."""

    type: ClassVar[str] = "validate_csv"
    display_name: ClassVar[str] = "Validate CSV"
    description: ClassVar[str] = (
        "Checks a CSV file: required columns present, typed columns valid on every row "
        "(int, float, str, bool, date as YYYY-MM-DD). Fails naming the line, column and value."
    )
    category: ClassVar[str] = "data"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": _PATH_DOC},
            "required_columns": {
                **_COLUMNS,
                "default": [],
                "description": "Columns the header must have.",
            },
            "delimiter": DELIMITER_SCHEMA,
            "types": {
                **_TYPES,
                "default": {},
                "description": (
                    "{column: type}: every cell of the column must read as the type; an empty "
                    "cell is valid only as str. bool is true/false/yes/no/1/0."
                ),
            },
            "max_errors": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10_000,
                "default": 20,
                "description": "How many invalid cells the error lists at most.",
            },
        },
        "required": ["path"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None
    output_doc: ClassVar[dict[str, str]] = {
        "path": "The path param, as given.",
        "row_count": "Data rows (blank lines not counted).",
        "columns": "The header, in file order.",
        "errors": "Invalid cells ({line, column, value, error}); always empty on success.",
    }
    failure_doc: ClassVar[tuple[str, ...]] = (
        "The file is missing, empty, not UTF-8 or malformed CSV, or a field is longer than "
        f"{FIELD_LIMIT:,} characters (10 MiB; the error names its line).",
        "A required or typed column is missing from the header, or the header repeats one.",
        "Any row is invalid (wrong field count, a cell not of its type): the error gives the "
        "count and up to max_errors cells with their line, column and value.",
        "The path leads out of data_dir.",
    )

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        source = ctx.path(params["path"], param="path")
        return await run_blocking(_validate, source, params)


def _validate(source: Path, params: Params, cancelled: threading.Event) -> dict[str, Any]:
    name = params["path"]
    types: Mapping[str, str] = params.get("types", {})
    with open_csv(source, name, params.get("delimiter", ",")) as (header, reader):
        missing = [c for c in (*params.get("required_columns", ()), *types) if c not in header]
        if missing:
            listed = ", ".join(repr(c) for c in dict.fromkeys(missing))
            raise TaskFailed(f"{name}: missing column(s) {listed} (header: {', '.join(header)})")
        try:
            rows = arrow.valid_rows(source, header, params.get("delimiter", ","), types, cancelled)
        except arrow.Fallback:  # the reference reader finds the lines and values
            pass
        else:
            return {"path": name, "row_count": rows, "columns": header, "errors": []}
        checks = [(header.index(c), c, t, CHECKS[t]) for c, t in types.items() if t != "str"]
        errors = _Errors(params.get("max_errors", 20))
        rows = 0
        for before, batch in batches(reader):
            stop_if(cancelled)
            if _batch_valid(batch, len(header), checks):
                rows += len(batch)
            else:
                rows += _find_errors(before, batch, len(header), checks, errors)
    if errors.count:
        raise TaskFailed(errors.message(name))
    return {"path": name, "row_count": rows, "columns": header, "errors": errors.kept}


Check = tuple[int, str, str, Callable[[str], object]]


def _batch_valid(batch: list[Row], width: int, checks: list[Check]) -> bool:
    """The fast path: every row has the header's width and every typed cell is valid."""
    if set(map(len, batch)) != {width}:
        return False
    return all(all(map(check, map(operator.itemgetter(i), batch))) for i, _, _, check in checks)


def _find_errors(
    before: int, batch: list[Row], width: int, checks: list[Check], errors: _Errors
) -> int:
    """Record every problem of a batch, row by row; return its count of non-blank rows."""
    line, rows = before + 1, 0
    for row in batch:
        if row:
            rows += 1
            found = errors.count
            if len(row) != width:
                errors.add(line, None, ",".join(row), f"has {len(row)} fields, header {width}")
            else:
                for index, column, type_name, check in checks:
                    if not check(row[index]):
                        errors.add(
                            line, column, row[index], f"is not {ARTICLE[type_name]} {type_name}"
                        )
            errors.rows += errors.count > found
        line += 1 + sum(map(breaks, row))
    return rows


# -- transform_simple -----------------------------------------------------------------------


class TransformSimpleTask:
    """Filters, cleans, casts and reshapes a CSV file into another, streaming."""

    type: ClassVar[str] = "transform_simple"
    display_name: ClassVar[str] = "Transform CSV"
    description: ClassVar[str] = (
        "Writes a transformed copy of a CSV file. Steps run in this order: filter, strip, "
        "lowercase, uppercase, cast, select, rename; every step names input columns."
    )
    category: ClassVar[str] = "data"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "input": {"type": "string", "minLength": 1, "description": _PATH_DOC},
            "output": {
                "type": "string",
                "minLength": 1,
                "description": (
                    "Path of the CSV file to write (comma-separated, UTF-8), relative to "
                    "data_dir; replaced atomically."
                ),
            },
            "delimiter": DELIMITER_SCHEMA,
            "filter": {
                "type": "array",
                "default": [],
                "description": (
                    "Rows kept: those passing every rule. Comparisons are numeric when both "
                    "sides read as numbers, textual otherwise; 'in' takes a list."
                ),
                "items": {
                    "type": "object",
                    "properties": {
                        "column": {"type": "string"},
                        "op": {"enum": list(OPS)},
                        "value": {
                            "type": ["string", "number", "array"],
                            "items": {"type": ["string", "number"]},
                        },
                    },
                    "required": ["column", "op", "value"],
                    "additionalProperties": False,
                },
            },
            "strip": {**_COLUMNS, "description": "Columns whose cells lose outer whitespace."},
            "lowercase": {**_COLUMNS, "description": "Columns turned to lower case."},
            "uppercase": {**_COLUMNS, "description": "Columns turned to upper case."},
            "cast": {
                **_TYPES,
                "description": (
                    "{column: type}: cells rewritten in canonical form (int '007' -> '7', "
                    "bool -> true/false); a cell that does not read as the type fails the node."
                ),
            },
            "select": {
                **_COLUMNS,
                "minItems": 1,
                "description": ("Input columns to keep, in this order (default: all)."),
            },
            "rename": {
                "type": "object",
                "additionalProperties": {"type": "string", "minLength": 1},
                "description": "{input column: output name}, for selected columns.",
            },
        },
        "required": ["input", "output"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None
    output_doc: ClassVar[dict[str, str]] = {
        "path": "The output param, as given.",
        "rows_in": "Data rows read.",
        "rows_out": "Rows written (those that passed the filter).",
    }
    failure_doc: ClassVar[tuple[str, ...]] = (
        "The input is missing, empty, not UTF-8 or malformed, a row has the wrong width, or "
        f"a field is longer than {FIELD_LIMIT:,} characters.",
        "A step names a column the input lacks; rename targets an unselected column or "
        "makes two output columns share a name.",
        "A cast meets a value that does not read as the type (line, column and value given).",
        "The output cannot be written (its folder is a file, or refuses new files; the "
        "disk is full): the error names it as given, and the reason.",
        "input or output leads out of data_dir, or is the daemon's own database. On any "
        "failure (or cancellation) the output is left as it was.",
    )

    def validate_params(self, params: Params, *, resolved: bool) -> list[str]:
        """Each filter's value fits its op: a list for ``in``, text for ``contains``."""
        rules = params.get("filter")
        problems: list[str] = []
        for i, rule in enumerate(rules if isinstance(rules, list) else ()):
            value, op = rule.get("value"), rule.get("op")
            if not resolved and isinstance(value, str) and contains_ref(value):
                continue
            where = f"filter.{i}.value"
            if op == "in" and not isinstance(value, list):
                problems.append(f"{where}: op 'in' needs a list of values, got {value!r}")
            elif op != "in" and isinstance(value, list):
                problems.append(f"{where}: op {op!r} needs one value, not a list")
            elif op == "contains" and not isinstance(value, str):
                problems.append(f"{where}: op 'contains' needs text, got {value!r}")
        return problems

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        source = ctx.path(params["input"], param="input")
        target = ctx.path(params["output"], param="output")
        return await run_blocking(_transform, source, target, params)


def _transform(
    source: Path, target: Path, params: Params, cancelled: threading.Event
) -> dict[str, Any]:
    name, delimiter = params["input"], params.get("delimiter", ",")
    with open_csv(source, name, delimiter) as (header, _):
        plan = build_plan(header, params, name)
    try:
        with atomic_write(
            target, "wb", cancelled=cancelled, name=params["output"], param="output"
        ) as out:
            rows_in, rows_out = arrow.transform(source, header, delimiter, plan, out, cancelled)
    except arrow.Fallback:  # the reference reader names the line of a bad row or cell
        rows_in, rows_out = _transform_rows(
            source, target, params["output"], delimiter, plan, cancelled
        )
    return {"path": params["output"], "rows_in": rows_in, "rows_out": rows_out}


def _transform_rows(
    source: Path,
    target: Path,
    name: str,
    delimiter: str,
    plan: Plan,
    cancelled: threading.Event,
) -> tuple[int, int]:
    """The reference path: the stdlib reader and writer, a batch of rows at a time."""
    rows_in = rows_out = 0
    with (
        open_csv(source, plan.name, delimiter) as (header, reader),
        atomic_write(
            target,
            "w",
            cancelled=cancelled,
            name=name,
            param="output",
            newline="",
            encoding="utf-8",
        ) as out,
    ):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(plan.header)
        for before, batch in batches(reader):
            stop_if(cancelled)
            rows = even_rows(plan.name, before, batch, len(header))
            rows_in += len(rows)
            done = _apply(plan, rows, functools.partial(_line, before, batch))
            rows_out += len(done)
            writer.writerows(done)
    return rows_in, rows_out


def _line(before: int, batch: list[Row], row: Row) -> int:
    # The first equal row of the batch: an equal earlier row would have failed first.
    return line_of(before, batch, batch.index(row))


def _apply(plan: Plan, rows: list[Row], line: Callable[[Row], int]) -> list[Any]:
    """One batch through every step; ``line(row)`` is the file line of an input row."""
    for index, op, value in plan.filters:
        test = predicate(op, value)
        rows = list(compress(rows, test(list(map(operator.itemgetter(index), rows)))))
    if not rows:
        return []
    columns: list[Sequence[str]] = list(zip(*rows, strict=True))
    for index, step in plan.edits:
        columns[index] = list(map(EDITS[step], columns[index]))
    for index, column, type_name in plan.casts:
        cast = cast_column(columns[index], type_name)
        if isinstance(cast, int):
            value = columns[index][cast]
            raise TaskFailed(
                f"{plan.name}: line {line(rows[cast])}: cast: column {column!r}: {value!r} is not "
                f"{ARTICLE[type_name]} {type_name}"
            )
        columns[index] = cast
    return list(zip(*(columns[i] for i in plan.select), strict=True))


TASKS = (ValidateCsvTask, TransformSimpleTask)
