"""The Arrow fast path of the CSV tasks agrees with the row-by-row reference, cell by cell.

Arrow (``tasks/csv/arrow.py``) may only accept what the reference (``csv/io``, ``csv/types``)
accepts and must produce the same cells; anything else falls back to the reference. These
tests put awkward cells through both and compare, and check that ordinary files never
fall back (so the fast path is really the one taken).
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import wfe_daemon.tasks.csv.tasks as csv_task
import wfe_daemon.tasks.sqlite as sqlite_task
from test_task_csv import context
from wfe_daemon.errors import TaskFailed
from wfe_daemon.tasks.csv import arrow
from wfe_daemon.tasks.csv.io import FIELD_LIMIT
from wfe_daemon.tasks.csv.tasks import TransformSimpleTask, ValidateCsvTask
from wfe_daemon.tasks.csv.types import CHECKS, OPS, cast_column, predicate
from wfe_daemon.tasks.sqlite import SaveDbTask

CELLS = [
    "",
    " ",
    "0",
    "-0",
    "+0",
    "007",
    "7",
    "-7",
    "+7",
    "12345678901234567890123",
    "1.",
    ".5",
    "1.5",
    "-1.50",
    "0.0",
    "-0.0",
    "0.00001",
    "0.0001",
    "1e5",
    "1E-5",
    "1e999",
    "nan",
    "inf",
    " 40 ",
    "\t40\n",
    "\x0b40",
    "\x1c40\x1f",
    "\xa040",
    "٤٠",
    "\uff11\uff12",
    "1,5",
    "1_000",
    "true",
    "False",
    "TRUE",
    "yes",
    "No",
    "1",
    "\u017f",
    "ye\u017f",
    "nO",
    "2024-02-29",
    "2023-02-29",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "2023-13-01",
    "2023-00-10",
    "2023-04-31",
    "2023-1-02",
    "20230102",
    " 2023-01-02",
    "Paris",
    " paris ",
    "PARIS",
    "straße",
    "İstanbul",
    "ǅ",
    "ﬁ",
    "café",
    'a"b',
    "a,b",
    "line\nbreak",
    "ΣΑΣ",
    "\u2028x\u2028",
    "\u3000x",
]


def one(cell: str) -> pa.Array:
    return pa.array([cell], pa.string())


@pytest.mark.parametrize("type_name", ["int", "float", "str", "bool", "date"])
def test_type_checks_agree_with_the_reference(type_name: str) -> None:
    for cell in CELLS:
        assert arrow.all_valid(one(cell), type_name) == bool(CHECKS[type_name](cell)), cell


@pytest.mark.parametrize("type_name", ["int", "float", "str", "bool", "date"])
def test_casts_agree_with_the_reference(type_name: str) -> None:
    for cell in CELLS:
        reference = cast_column([cell], type_name)
        if isinstance(reference, int):
            with pytest.raises(arrow.Fallback):
                arrow.cast(one(cell), type_name)
        else:
            assert arrow.cast(one(cell), type_name).to_pylist() == list(reference), cell
    # A whole column at once: canonical cells stay, others are rewritten in place.
    column = ["007", "7", "-0", "12"] if type_name == "int" else ["1.50", "2.5", "0.00001"]
    if type_name in ("int", "float"):
        expected = cast_column(column, type_name)
        assert arrow.cast(pa.array(column), type_name).to_pylist() == list(expected)


@pytest.mark.parametrize("step", ["strip", "lowercase", "uppercase"])
def test_edits_agree_with_the_reference(step: str) -> None:
    method = {"strip": str.strip, "lowercase": str.lower, "uppercase": str.upper}[step]
    assert arrow.EDITS[step](pa.array(CELLS)).to_pylist() == [method(c) for c in CELLS]


VALUES: list[Any] = [0, 5, -0.0, 1.5, "5", " 5 ", "1e5", "Paris", "paris", "", "a,b", "x"]


@pytest.mark.parametrize("op", [op for op in OPS if op not in ("in", "contains")])
@pytest.mark.parametrize("value", VALUES)
def test_comparisons_agree_with_the_reference(op: str, value: Any) -> None:
    expected = list(predicate(op, value)(CELLS))
    assert arrow.keep(pa.array(CELLS), op, value).to_pylist() == expected


@pytest.mark.parametrize("value", [[0, "Paris"], ["paris", " 40 "], [40, 7.0], ["a,b", 1e5], [""]])
def test_membership_agrees_with_the_reference(value: list[Any]) -> None:
    expected = list(predicate("in", value)(CELLS))
    assert arrow.keep(pa.array(CELLS), "in", value).to_pylist() == expected


@pytest.mark.parametrize("value", ["a", "", "ß", ",", 5])
def test_contains_agrees_with_the_reference(value: Any) -> None:
    expected = list(predicate("contains", value)(CELLS))
    assert arrow.keep(pa.array(CELLS), "contains", value).to_pylist() == expected


def reference_csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


@pytest.mark.parametrize("width", [1, 2, 3])
def test_written_rows_match_the_stdlib_writer(width: int) -> None:
    cells = [c for c in CELLS if "\r" not in c]  # Python 3.11's writer leaves \r unquoted
    rows = [[cells[(i + j) % len(cells)] for j in range(width)] for i in range(len(cells))]
    columns = [pa.array(list(column), pa.string()) for column in zip(*rows, strict=True)]
    assert bytes(arrow._csv_rows(columns)) == reference_csv(rows)
    # A slice of a column (an array with an offset) writes only its own rows.
    sliced = [column.slice(2, 3) for column in columns]
    assert bytes(arrow._csv_rows(sliced)) == reference_csv(rows[2:5])


def test_a_carriage_return_is_quoted() -> None:
    assert bytes(arrow._csv_rows([pa.array(["a\rb"]), pa.array(["x"])])) == b'"a\rb",x\n'


FILES = {
    "plain": "a,b\n1,2\n3,4\n",
    "crlf": "a,b\r\n1,2\r\n3,4\r\n",
    "bom": "\ufeffa,b\n1,2\n",
    "quoted breaks": 'a,b\n1,"x\ny"\n2,"p\r\nq"\n',
    "doubled quotes": 'a,b\n"say ""hi""",2\n',
    "blank lines": "a,b\n\n1,2\n\n\n3,4\n",
    "no final newline": "a,b\n1,2",
    "stray quote": 'a,b\nx"y,2\n',
    "text after a closing quote": 'a,b\n"ab"c,2\n',
    "spaces": "a,b\n  , 2 \n",
    "semicolons": "a;b\n1;2,5\n",
    "header only": "a,b\n",
}


@pytest.mark.parametrize("name", list(FILES))
def test_arrow_reads_files_as_the_stdlib_reader_does(name: str, tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(FILES[name].encode())
    delimiter = ";" if name == "semicolons" else ","
    with path.open(newline="", encoding="utf-8-sig") as f:
        header, *expected = [row for row in csv.reader(f, delimiter=delimiter) if row]
    batches = arrow.batches(path, header, delimiter, threading.Event())
    rows = [list(row) for b in batches for row in zip(*b.to_pydict().values(), strict=True)]
    assert rows == expected


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n1\n",
        "a,b\n1,2,3\n",
        'a\n"open\n',
        "a,b\n1,\xff\n",
        "a,a2\n1,2\n",
    ],
)
def test_what_arrow_cannot_read_falls_back(text: str, tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode("latin-1"))
    header = ["a", "b"] if text.startswith("a,b") else ["a", "z"]
    with pytest.raises(arrow.Fallback):
        list(arrow.batches(path, header, ",", threading.Event()))


SALES = "id,date,region,amount,note\n" + "".join(
    f'{i},2024-01-{i % 28 + 1:02d}, North{i % 3} ,{i * 1.25 - 5:.2f},"x, ""{i}"""\n'
    for i in range(1, 400)
)


async def test_ordinary_files_never_take_the_reference_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate -> transform -> save_db on a file with quoted fields all run on Arrow."""

    def no_fallback(*_: object, **__: object) -> Any:
        raise AssertionError("the reference path was taken")

    monkeypatch.setattr(csv_task, "batches", no_fallback)
    monkeypatch.setattr(sqlite_task, "_row_batches", no_fallback)
    data = tmp_path
    (data / "sales.csv").write_text(SALES)
    ctx = context(data)
    checked = await ValidateCsvTask().execute(
        {"path": "sales.csv", "types": {"id": "int", "date": "date", "amount": "float"}}, ctx
    )
    assert checked["row_count"] == 399
    cleaned = await TransformSimpleTask().execute(
        {
            "input": "sales.csv",
            "output": "clean.csv",
            "filter": [{"column": "amount", "op": "ge", "value": 0}],
            "strip": ["region"],
            "uppercase": ["region"],
            "cast": {"amount": "float", "id": "int"},
            "select": ["id", "region", "amount", "note"],
            "rename": {"amount": "eur"},
        },
        ctx,
    )
    assert cleaned["rows_out"] == 396
    loaded = await SaveDbTask().execute(
        {"source": "clean.csv", "database": "s.db", "table": "sales", "mode": "replace"}, ctx
    )
    assert loaded["rows_written"] == 396
    first = (data / "clean.csv").read_text().splitlines()[:2]
    assert first == ["id,region,eur,note", '4,NORTH1,0.0,"x, ""4"""']


async def test_a_file_only_the_reference_reader_takes_still_loads(tmp_path: Path) -> None:
    """A quote left open at the end: Arrow refuses it, the stdlib reader reads the rest of
    the file as the cell; save_db loads what the reference reads."""
    (tmp_path / "odd.csv").write_text('a\n1\n"open\n')
    loaded = await SaveDbTask().execute(
        {"source": "odd.csv", "database": "o.db", "table": "t"}, context(tmp_path)
    )
    assert loaded["rows_written"] == 2
    import sqlite3

    with sqlite3.connect(tmp_path / "o.db") as db:
        assert db.execute("SELECT a FROM t").fetchall() == [("1",), ("open\n",)]


# -- long fields ----------------------------------------------------------------------------


def long_field_file(folder: Path, size: int, *, bad_cell: bool = False) -> Path:
    """A valid CSV file (or one with an int cell that is not one) whose row 3000 holds a
    quoted field of ``size`` characters (commas, quotes and a line break included)."""
    field = ('x,"y"\n' + "é" * 7 + "z" * size)[:size]
    rows = [f"{i},{i}\n" for i in range(1, 3000)]
    rows.append('3000,"' + field.replace('"', '""') + '"\n')
    rows += [f"{i},{i}\n" for i in range(3001, 3010)]
    if bad_cell:
        rows.append("nine,9\n")
    path = folder / "long.csv"
    path.write_text("id,note\n" + "".join(rows))
    return path


def no_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reference path fail the test if any task takes it."""

    def no_fallback(*_: object, **__: object) -> Any:
        raise AssertionError("the reference path was taken")

    monkeypatch.setattr(csv_task, "batches", no_fallback)
    monkeypatch.setattr(sqlite_task, "_row_batches", no_fallback)


def no_arrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Arrow refuse every file, so every task takes the reference path."""

    def refuse(*_: object, **__: object) -> Any:
        raise arrow.Fallback

    monkeypatch.setattr(arrow, "batches", refuse)


async def through_the_three_tasks(data: Path) -> tuple[Any, bytes, list[Any]]:
    """validate_csv, transform_simple and save_db on ``long.csv``: outputs, file and rows."""
    import sqlite3

    ctx = context(data)
    checked = await ValidateCsvTask().execute({"path": "long.csv", "types": {"id": "int"}}, ctx)
    await TransformSimpleTask().execute(
        {"input": "long.csv", "output": "out.csv", "cast": {"id": "int"}}, ctx
    )
    await SaveDbTask().execute(
        {"source": "long.csv", "database": "long.db", "table": "t", "mode": "replace"}, ctx
    )
    with sqlite3.connect(data / "long.db") as db:
        rows = db.execute("SELECT id, note FROM t ORDER BY rowid").fetchall()
    (data / "long.db").unlink()
    return checked, (data / "out.csv").read_bytes(), rows


@pytest.mark.parametrize("size", [600_000, 3_000_000])
async def test_a_record_longer_than_the_block_stays_on_arrow(
    size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field longer than the stdlib's 128 KiB limit and than Arrow's first block goes
    through the three CSV tasks on Arrow, which reads again with a larger block."""
    long_field_file(tmp_path, size)
    no_reference(monkeypatch)
    checked, written, rows = await through_the_three_tasks(tmp_path)
    assert checked["row_count"] == 3009
    assert len(rows) == 3009 and len(rows[2999][1]) == size and rows[3000] == ("3001", "3001")
    assert written.count(b"\n") == 3010 + 1  # header, rows, the line break in the field


@pytest.mark.parametrize("size", [200_000, 3_000_000, FIELD_LIMIT])
async def test_long_fields_read_the_same_on_both_paths(
    size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fields up to FIELD_LIMIT characters give the same outputs, file and table on Arrow
    and on the reference path."""
    long_field_file(tmp_path, size)
    on_arrow = await through_the_three_tasks(tmp_path)
    no_arrow(monkeypatch)
    assert await through_the_three_tasks(tmp_path) == on_arrow
    assert len(on_arrow[2][2999][1]) == size


@pytest.mark.parametrize("size", [200_000, 700_000])
async def test_a_bad_cell_beside_a_long_field_is_named(size: int, tmp_path: Path) -> None:
    """A file with a long field and a bad cell falls back to the reference reader, which
    names the bad cell (not the field's length)."""
    long_field_file(tmp_path, size, bad_cell=True)
    with pytest.raises(TaskFailed, match=r"line 3012, column 'id': 'nine' is not an int"):
        await ValidateCsvTask().execute(
            {"path": "long.csv", "types": {"id": "int"}}, context(tmp_path)
        )
    with pytest.raises(TaskFailed, match=r"line 3012: cast: column 'id': 'nine'"):
        await TransformSimpleTask().execute(
            {"input": "long.csv", "output": "o.csv", "cast": {"id": "int"}}, context(tmp_path)
        )


@pytest.mark.parametrize("path", ["arrow", "reference"])
async def test_a_field_over_the_limit_fails_naming_line_and_limit(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field one character over FIELD_LIMIT fails all three tasks with its line and the
    limit, on either path; nothing is written."""
    long_field_file(tmp_path, FIELD_LIMIT + 1)
    if path == "reference":
        no_arrow(monkeypatch)
    ctx = context(tmp_path)
    expected = rf"long.csv: line 300\d: a field is longer than {FIELD_LIMIT:,} characters"
    with pytest.raises(TaskFailed, match=expected):
        await ValidateCsvTask().execute({"path": "long.csv"}, ctx)
    with pytest.raises(TaskFailed, match=expected):
        await TransformSimpleTask().execute({"input": "long.csv", "output": "o.csv"}, ctx)
    with pytest.raises(TaskFailed, match=expected):
        await SaveDbTask().execute({"source": "long.csv", "database": "l.db", "table": "t"}, ctx)
    assert not (tmp_path / "o.csv").exists()
