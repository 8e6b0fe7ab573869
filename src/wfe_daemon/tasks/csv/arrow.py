"""The fast path of the CSV tasks: Apache Arrow's C++ CSV reader, compute kernels and writer.

A million rows through ``validate_csv -> transform_simple -> save_db`` cost about eight
seconds through the stdlib :mod:`csv` module (three parses, a write and a million
``INSERT`` bindings, each row a Python list); Arrow does the same work on columns of
a batch without a Python object per cell.

The row-by-row reader of :mod:`wfe_daemon.tasks.csv.io` stays the reference: Arrow only
ever *accepts* what it would accept, and produces the same cells. Whenever Arrow rejects
something (a row of another width, a cell that is not of its type, bytes that are not
UTF-8, a file it cannot parse) this module raises :class:`Fallback` and the task runs its
row-by-row path, which names the line and value (or, where the stdlib reader is more
lenient, does the work itself). Where the two could differ on a cell (non-ASCII text for
strip and case changes, unusual spellings of numbers, values not already in canonical
form), that cell alone is computed in Python by the same function as the reference path.

Memory stays flat: the reader holds one block (:data:`BLOCK_BYTES`) of the file at a time
and runs in the task's worker thread (Arrow's own threads are not used). A record must fit
in about two blocks: a longer one makes the reader start again with a larger block (up to
:data:`MAX_BLOCK_BYTES`), past the rows already read. Fields longer than
:data:`~wfe_daemon.tasks.csv.io.FIELD_LIMIT` fall back, and the reference reader names
their line.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from wfe_daemon.tasks._threads import stop_if
from wfe_daemon.tasks.csv.io import FIELD_LIMIT
from wfe_daemon.tasks.csv.plan import Plan
from wfe_daemon.tasks.csv.types import (
    ARROW_CANONICAL,
    ARROW_CHECKS,
    CHECKS,
    LEAP_DAY,
    cast_column,
    number,
    predicate,
    text,
)

if TYPE_CHECKING:
    import pyarrow as pa

BLOCK_BYTES = 256 * 1024
"""Bytes of CSV parsed at a time (a batch is some thousands of rows)."""
MAX_BLOCK_BYTES = 32 * 1024 * 1024
"""The largest block tried: records up to about twice this size stay on Arrow (a field of
:data:`~wfe_daemon.tasks.csv.io.FIELD_LIMIT` characters fits); longer ones fall back."""
_GROWTH = 8

_ASCII_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
"""The ASCII characters for which ``str.isspace()`` holds: what ``str.strip()`` removes."""

_SIMPLE_NUMBER = r"^-?[0-9]+(?:\.[0-9]+)?$"
"""Cells whose float value Arrow's cast computes exactly as ``float()`` does."""

_COMPARE = {
    "eq": "equal",
    "ne": "not_equal",
    "lt": "less",
    "le": "less_equal",
    "gt": "greater",
    "ge": "greater_equal",
}


class Fallback(Exception):
    """Arrow cannot take this file or cell: the row-by-row path must."""


@functools.cache
def _use_a_thrifty_allocator() -> None:
    """Make jemalloc Arrow's allocator for the process (the system's malloc if the build
    lacks it): it hands freed blocks back sooner than the default mimalloc. Measured on a
    million rows through the three CSV tasks: peak RSS 95 MB, against 131 MB."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        pa.set_memory_pool(pa.system_memory_pool())


def batches(
    file: Path, header: Sequence[str], delimiter: str, cancelled: threading.Event
) -> Iterator[pa.RecordBatch]:
    """The data rows of ``file`` as batches of string columns named after ``header``.

    Raises:
        Fallback: Arrow cannot parse the file as the reference reader would (another
            header, a row of another width, invalid UTF-8, a quote left open, a field
            longer than ``FIELD_LIMIT``, a record too long for the largest block...).
    """
    import pyarrow as pa

    _use_a_thrifty_allocator()
    done, block = 0, BLOCK_BYTES
    while True:
        try:
            for batch in _read(file, header, delimiter, cancelled, block, skip=done):
                done += batch.num_rows
                yield batch
            return
        except pa.ArrowInvalid as exc:
            # "straddling object straddles two block boundaries": a record longer than
            # the block; read again with a larger one, past the rows already given.
            if "straddl" not in str(exc) or block >= MAX_BLOCK_BYTES:
                raise Fallback from exc
            block = min(block * _GROWTH, MAX_BLOCK_BYTES)
        except (pa.ArrowException, OSError) as exc:
            raise Fallback from exc


def _read(
    file: Path,
    header: Sequence[str],
    delimiter: str,
    cancelled: threading.Event,
    block: int,
    *,
    skip: int,
) -> Iterator[pa.RecordBatch]:
    """The batches of one reader of ``block`` bytes, without the first ``skip`` rows."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(
        file,
        read_options=pcsv.ReadOptions(use_threads=False, block_size=block),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if reader.schema.names != list(header):
        raise Fallback
    while True:
        stop_if(cancelled)
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        if skip:
            batch, skip = batch.slice(skip), 0
        _check_fields(batch)
        yield batch


def _check_fields(batch: pa.RecordBatch) -> None:
    """Fall back when a cell is longer than ``FIELD_LIMIT`` (the reference names its line)."""
    import pyarrow.compute as pc

    for column in batch.columns:
        data = column.buffers()[2]
        # Only a column holding that many bytes can hold such a cell: one test per column.
        if data is not None and data.size > FIELD_LIMIT and len(column):
            longest = pc.max(pc.utf8_length(column)).as_py()
            if longest > FIELD_LIMIT:
                raise Fallback


def all_valid(column: pa.Array, type_name: str) -> bool:
    """Every cell of ``column`` reads as ``type_name`` (as ``types.CHECKS`` decides)."""
    import pyarrow.compute as pc

    if type_name == "str":
        return True
    valid = pc.match_substring_regex(column, ARROW_CHECKS[type_name])
    if type_name == "date":
        check = CHECKS["date"]
        valid = _in_python(
            valid,
            pc.match_substring_regex(column, LEAP_DAY),
            column,
            lambda cells: [bool(check(c)) for c in cells],
        )
    return bool(pc.all(valid).as_py())


def _in_python(
    result: pa.Array, where: pa.Array, source: pa.Array, fn: Callable[[list[Any]], list[Any]]
) -> pa.Array:
    """``result`` with the cells at ``where`` replaced by ``fn`` over those of ``source``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pc.any(where).as_py():
        return result
    values = fn(source.filter(where).to_pylist())
    return pc.replace_with_mask(result, where, pa.array(values, result.type))


def _non_ascii(column: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.invert(pc.string_is_ascii(column))


def strip(column: pa.Array) -> pa.Array:
    """``str.strip`` of every cell."""
    import pyarrow.compute as pc

    done = pc.utf8_trim(column, characters=_ASCII_SPACE)
    return _in_python(done, _non_ascii(column), column, lambda cells: [c.strip() for c in cells])


def lowercase(column: pa.Array) -> pa.Array:
    """``str.lower`` of every cell."""
    import pyarrow.compute as pc

    done = pc.ascii_lower(column)
    return _in_python(done, _non_ascii(column), column, lambda cells: [c.lower() for c in cells])


def uppercase(column: pa.Array) -> pa.Array:
    """``str.upper`` of every cell."""
    import pyarrow.compute as pc

    done = pc.ascii_upper(column)
    return _in_python(done, _non_ascii(column), column, lambda cells: [c.upper() for c in cells])


EDITS: dict[str, Callable[[pa.Array], pa.Array]] = {
    "strip": strip,
    "lowercase": lowercase,
    "uppercase": uppercase,
}


def cast(column: pa.Array, type_name: str) -> pa.Array:
    """Every cell in the canonical text of ``type_name`` (as ``cast_column`` writes it).

    Raises:
        Fallback: a cell does not read as the type (the reference path names its line).
    """
    import pyarrow.compute as pc

    if type_name in ("str", "date"):
        if not all_valid(column, type_name):
            raise Fallback
        return column  # a valid value is canonical
    canonical = pc.match_substring_regex(column, ARROW_CANONICAL[type_name])
    if type_name == "float":  # 0.00001 reads as 1e-05: tiny values take the Python path
        canonical = pc.and_(canonical, pc.invert(pc.match_substring_regex(column, r"^-?0\.0000")))

    def reference(cells: list[str]) -> list[str]:
        done = cast_column(cells, type_name)
        if isinstance(done, int):
            raise Fallback
        return list(done)

    return _in_python(column, pc.invert(canonical), column, reference)


def keep(column: pa.Array, op: str, value: Any) -> pa.Array:
    """The filter rule ``{op, value}`` over ``column``: one boolean per cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if op == "contains":
        return pc.match_substring(column, text(value))
    reference = predicate(op, value)
    if op == "in":
        texts = [text(v) for v in value if number(v) is None]
        numbers = [n + 0.0 for n in map(number, value) if n is not None]  # -0.0 is 0.0
        found = pc.is_in(column, value_set=pa.array(texts, pa.string()))
        if not numbers:
            return found
        test: Callable[[pa.Array], pa.Array] = lambda floats: pc.is_in(  # noqa: E731
            pc.add(floats, 0.0), value_set=pa.array(numbers, pa.float64())
        )
    else:
        compare, target = getattr(pc, _COMPARE[op]), number(value)
        if target is None:
            return compare(column, text(value))
        found = None
        test = lambda floats: compare(floats, target)  # noqa: E731
    simple = pc.match_substring_regex(column, _SIMPLE_NUMBER)
    floats = pc.cast(pc.if_else(simple, column, "0"), pa.float64())
    decided = test(floats)
    if found is not None:
        decided = pc.or_(found, decided)
    return _in_python(decided, pc.invert(simple), column, lambda cells: list(reference(cells)))


def valid_rows(
    file: Path,
    header: Sequence[str],
    delimiter: str,
    types: Mapping[str, str],
    cancelled: threading.Event,
) -> int:
    """The count of data rows, once every typed cell is known valid.

    Raises:
        Fallback: a cell is invalid, or Arrow cannot read the file.
    """
    typed = [(column, t) for column, t in types.items() if t != "str"]
    rows = 0
    for batch in batches(file, header, delimiter, cancelled):
        if not all(all_valid(batch.column(column), t) for column, t in typed):
            raise Fallback
        rows += batch.num_rows
    return rows


def transform(
    file: Path,
    header: Sequence[str],
    delimiter: str,
    plan: Plan,
    out: IO[bytes],
    cancelled: threading.Event,
) -> tuple[int, int]:
    """Write ``plan`` applied to ``file`` to ``out`` as CSV; return (rows in, rows out).

    Raises:
        Fallback: a cast meets an invalid cell, or Arrow cannot read the file.
    """
    import pyarrow.compute as pc

    out.write(_csv_line(plan.header))
    rows_in = rows_out = 0
    for batch in batches(file, header, delimiter, cancelled):
        rows_in += batch.num_rows
        columns = batch.columns
        masks = [keep(columns[index], op, value) for index, op, value in plan.filters]
        if masks:
            mask = masks[0]
            for more in masks[1:]:
                mask = pc.and_(mask, more)
            columns = [column.filter(mask) for column in columns]
        for index, step in plan.edits:
            columns[index] = EDITS[step](columns[index])
        for index, _, type_name in plan.casts:
            columns[index] = cast(columns[index], type_name)
        selected = [columns[i] for i in plan.select]
        if len(selected[0]):
            out.write(_csv_rows(selected))
        rows_out += len(selected[0])
    return rows_in, rows_out


def _csv_line(cells: Sequence[str]) -> bytes:
    """One row as ``csv.writer(lineterminator="\\n")`` writes it."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode()


def _has_special(column: pa.Array) -> bool:
    """Whether any cell of ``column`` holds a comma, a quote or a line break (one memchr
    per character over the column's bytes, much cheaper than a test per cell)."""
    data = column.buffers()[2]
    if data is None:
        return False
    text = data.to_pybytes()
    return any(char in text for char in (b",", b'"', b"\r", b"\n"))


def _csv_rows(columns: list[pa.Array]) -> memoryview:
    """The rows of ``columns`` as comma-separated lines, quoted only where needed: a cell
    holding a comma, a quote or a line break (and, as ``csv.writer`` does, the empty cell
    of a one-column row)."""
    import pyarrow.compute as pc

    quoted = []
    for column in columns:
        needs = None
        if len(columns) == 1:
            needs = pc.equal(column, "")
        if _has_special(column):
            found = pc.match_substring_regex(column, '[,"\r\n]')
            needs = found if needs is None else pc.or_(needs, found)
        if needs is not None and pc.any(needs).as_py():
            wrapped = pc.binary_join_element_wise(
                '"', pc.replace_substring(column, '"', '""'), '"', ""
            )
            column = pc.if_else(needs, wrapped, column)
        quoted.append(column)
    lines = pc.binary_join_element_wise(*quoted, ",") if len(quoted) > 1 else quoted[0]
    lines = pc.binary_join_element_wise(lines, "", "\n")
    _, offsets, data = lines.buffers()
    bounds = memoryview(offsets).cast("i")  # int32 offsets of a (non-large) string array
    return memoryview(data)[bounds[lines.offset] : bounds[lines.offset + len(lines)]]
