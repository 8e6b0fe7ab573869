"""validate_csv and transform_simple on real files, directly and through the engine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from test_task_paths import unwritable
from wfe_daemon.config import Settings
from wfe_daemon.errors import PathEscapeError, TaskFailed
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Services, TaskContext
from wfe_daemon.service.submission import submit
from wfe_daemon.tasks import BUILTINS
from wfe_daemon.tasks._threads import run_blocking
from wfe_daemon.tasks.csv.tasks import TransformSimpleTask, ValidateCsvTask

SALES = (
    "id,date,region,amount,note\n"
    "1,2024-01-05,north,12.50,paid\n"
    "2,2024-01-06,south,7,\n"
    "3,2024-02-29,east,-3.25,refund\n"
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data_dir of the test (the same folder ``engine_factory`` uses)."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    return folder


def context(data_dir: Path) -> TaskContext:
    """A task context whose data_dir is ``data_dir``."""
    return TaskContext(1, "test", "node", 1, Settings(data_dir=data_dir), Services())


async def run_nodes(engine: Engine, *nodes: dict[str, Any]) -> dict[str, Any]:
    """Run a workflow of ``nodes`` (a chain, in order) through the engine; return its summary."""
    chained = [{**n, "depends_on": [nodes[i - 1]["id"]]} if i else n for i, n in enumerate(nodes)]
    doc = {"name": "csv test", "nodes": chained}
    data = json.dumps(doc).encode()
    return await submit(
        data, registry=engine.registry, store=engine.store, engine=engine, source="test.json"
    )


def validate(path: str, **params: Any) -> dict[str, Any]:
    """A validate_csv node called ``v``."""
    return {"id": "v", "type": "validate_csv", "params": {"path": path, **params}}


def transform(**params: Any) -> dict[str, Any]:
    """A transform_simple node called ``t``."""
    return {"id": "t", "type": "transform_simple", "params": params}


# -- validate_csv ---------------------------------------------------------------------------


async def test_valid_file_reports_rows_and_columns(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """A valid file gives SUCCESS with its row count, header and no errors."""
    (data / "sales.csv").write_text(SALES)
    summary = await run_nodes(
        engine_factory(),
        validate(
            "sales.csv",
            required_columns=["id", "amount"],
            types={"id": "int", "date": "date", "amount": "float", "region": "str"},
        ),
    )
    assert summary["nodes"]["v"]["status"] == "SUCCESS"
    assert summary["nodes"]["v"]["output"] == {
        "path": "sales.csv",
        "row_count": 3,
        "columns": ["id", "date", "region", "amount", "note"],
        "errors": [],
    }


async def test_bad_typed_value_fails_naming_line_column_and_value(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """An invalid cell fails the node; the error names its file line, column and value."""
    (data / "sales.csv").write_text(SALES.replace("7,\n", "seven,\n"))
    summary = await run_nodes(engine_factory(), validate("sales.csv", types={"amount": "float"}))
    node = summary["nodes"]["v"]
    assert node["status"] == "FAILED"
    assert node["error"] == (
        "sales.csv: 1 invalid value(s) in 1 row(s): line 3, column 'amount': 'seven' is not a float"
    )


async def test_errors_are_counted_and_capped_at_max_errors(data: Path) -> None:
    """Every invalid cell is counted; the message lists at most max_errors of them."""
    rows = "".join(f"{i},x{i},2024-13-0{i}\n" for i in range(1, 6))
    (data / "f.csv").write_text("n,v,d\n" + rows)
    with pytest.raises(TaskFailed) as caught:
        await ValidateCsvTask().execute(
            {"path": "f.csv", "types": {"v": "int", "d": "date"}, "max_errors": 3}, context(data)
        )
    message = str(caught.value)
    assert message.startswith("f.csv: 10 invalid value(s) in 5 row(s) (first 3 shown): ")
    assert "line 2, column 'v': 'x1' is not an int; line 2, column 'd': '2024-13-01'" in message
    assert "line 3, column 'v'" in message
    assert "line 4" not in message


@pytest.mark.parametrize(
    ("type_name", "good", "bad"),
    [
        ("int", ["0", "-12", "+7", "007"], ["", "1.0", "1e3", "12a", " 1", "²"]),
        ("float", ["1", "-1.5", ".5", "2.", "1e-3", "+3E2"], ["", "nan", "inf", "1,5", "1_0"]),
        ("bool", ["true", "False", "YES", "no", "1", "0"], ["", "y", "maybe", "2"]),
        (
            "date",
            ["2024-02-29", "1999-12-31"],
            ["", "2023-02-29", "2024-1-05", "20240105", "2024-01-05T00:00"],
        ),
        ("str", ["", "anything"], []),
    ],
)
async def test_each_type_accepts_and_refuses_what_it_should(
    data: Path, type_name: str, good: list[str], bad: list[str]
) -> None:
    """Each type accepts its valid spellings and reports every other value."""
    (data / "f.csv").write_text("c\n" + "".join(f'"{v}"\n' for v in [*good, *bad]))
    params = {"path": "f.csv", "types": {"c": type_name}, "max_errors": 100}
    if not bad:
        output = await ValidateCsvTask().execute(params, context(data))
        assert output["row_count"] == len(good)
        return
    with pytest.raises(TaskFailed) as caught:
        await ValidateCsvTask().execute(params, context(data))
    assert f"{len(bad)} invalid value(s)" in str(caught.value)
    for value in bad:
        assert repr(value) in str(caught.value)


async def test_line_numbers_count_quoted_line_breaks_and_blank_lines(data: Path) -> None:
    """A field spanning lines and a blank line before a bad row still give its true line."""
    (data / "f.csv").write_text('id,note\n1,"two\nlines"\n\n2,ok\nx,bad\n')
    with pytest.raises(TaskFailed, match=r"line 6, column 'id': 'x' is not an int"):
        await ValidateCsvTask().execute({"path": "f.csv", "types": {"id": "int"}}, context(data))


async def test_row_with_wrong_field_count_is_an_error(data: Path) -> None:
    """A row with more or fewer fields than the header is reported with its line."""
    (data / "f.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(TaskFailed, match=r"line 3: '3' has 1 fields, header 2"):
        await ValidateCsvTask().execute({"path": "f.csv"}, context(data))


async def test_delimiter_and_byte_order_mark(data: Path) -> None:
    """A semicolon-separated file with a UTF-8 BOM reads with delimiter ';'."""
    (data / "f.csv").write_bytes("\ufeffa;b\n1;2\n".encode())
    output = await ValidateCsvTask().execute(
        {"path": "f.csv", "delimiter": ";", "types": {"a": "int"}}, context(data)
    )
    assert output["columns"] == ["a", "b"]


async def test_missing_required_column_fails_naming_it(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """A required (or typed) column absent from the header fails the node, named."""
    (data / "sales.csv").write_text(SALES)
    summary = await run_nodes(
        engine_factory(),
        validate("sales.csv", required_columns=["id", "customer"], types={"vat": "float"}),
    )
    assert summary["nodes"]["v"]["status"] == "FAILED"
    assert summary["nodes"]["v"]["error"].startswith(
        "sales.csv: missing column(s) 'customer', 'vat' (header: id, date, region"
    )


async def test_missing_file_and_empty_file_fail_clearly(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """A missing file and an empty one are FAILED nodes that say so."""
    (data / "empty.csv").write_text("")
    engine = engine_factory()
    summary = await run_nodes(engine, validate("nope.csv"))
    assert summary["nodes"]["v"]["error"] == "nope.csv: no such file in data_dir"
    summary = await run_nodes(engine, validate("empty.csv"))
    assert "no header row" in summary["nodes"]["v"]["error"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../outside.csv", "uses '..'"),
        ("/etc/passwd", "is absolute"),
        ("link/outside.csv", "through a symlink"),
    ],
)
async def test_paths_out_of_data_dir_fail_the_node(
    engine_factory: Callable[..., Engine], data: Path, tmp_path: Path, path: str, expected: str
) -> None:
    """'..', absolute paths and symlinks out of data_dir are FAILED nodes, for every path param."""
    (tmp_path / "outside.csv").write_text(SALES)
    (data / "link").symlink_to(tmp_path)
    (data / "in.csv").write_text(SALES)
    engine = engine_factory()
    summary = await run_nodes(engine, validate(path))
    assert summary["nodes"]["v"]["status"] == "FAILED"
    assert expected in summary["nodes"]["v"]["error"]
    for params in ({"input": path, "output": "o.csv"}, {"input": "in.csv", "output": path}):
        summary = await run_nodes(engine, transform(**params))
        assert summary["nodes"]["t"]["status"] == "FAILED"
        assert expected in summary["nodes"]["t"]["error"]


# -- transform_simple -----------------------------------------------------------------------

PEOPLE = (
    "name,city,amount,code\n"
    "alice,Paris,007,a1\n"
    "Bob, paris ,9,b2\n"
    "Carol,PARIS,12,c3\n"
    "dave,Paris,3,d4\n"
    "Eve,Paris, 40 ,e5\n"
)


async def test_steps_run_in_contract_order(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """filter sees raw values, then strip, lowercase, uppercase, cast, select, rename apply."""
    (data / "people.csv").write_text(PEOPLE)
    summary = await run_nodes(
        engine_factory(),
        transform(
            input="people.csv",
            output="out/people.csv",
            # On raw values: ' paris ' and 'PARIS' are not 'Paris' (strip/lowercase come later);
            # '007' > 5 numerically (textually '007' < '5'); ' 40 ' reads as a number too.
            filter=[
                {"column": "city", "op": "eq", "value": "Paris"},
                {"column": "amount", "op": "gt", "value": 5},
            ],
            strip=["amount"],
            lowercase=["city", "name"],
            uppercase=["name"],
            cast={"amount": "int"},
            select=["amount", "name", "city"],  # input names, in output order
            rename={"amount": "total", "city": "town"},  # input name -> output name
        ),
    )
    assert summary["nodes"]["t"]["status"] == "SUCCESS"
    assert summary["nodes"]["t"]["output"] == {
        "path": "out/people.csv",
        "rows_in": 5,
        "rows_out": 2,
    }
    written = (data / "out" / "people.csv").read_text()
    assert written == "total,name,town\n7,ALICE,paris\n40,EVE,paris\n"


@pytest.mark.parametrize(
    ("op", "value", "kept"),
    [
        ("eq", 7, ["alice"]),
        ("eq", "007", ["alice"]),
        ("ne", 9, ["alice", "Carol", "dave", "Eve"]),
        ("lt", 9, ["alice", "dave"]),
        ("le", 9, ["alice", "Bob", "dave"]),
        ("gt", 12, ["Eve"]),
        ("ge", "12", ["Carol", "Eve"]),
        ("in", [3, "9", 100], ["Bob", "dave"]),
        ("contains", "0", ["alice", "Eve"]),
    ],
)
async def test_filter_ops(data: Path, op: str, value: Any, kept: list[str]) -> None:
    """Each op keeps the rows it should, comparing numerically when both sides are numbers."""
    (data / "people.csv").write_text(PEOPLE)
    await TransformSimpleTask().execute(
        {
            "input": "people.csv",
            "output": "o.csv",
            "select": ["name"],
            "filter": [{"column": "amount", "op": op, "value": value}],
        },
        context(data),
    )
    assert (data / "o.csv").read_text().split() == ["name", *kept]


async def test_text_comparison_when_a_side_is_not_a_number(data: Path) -> None:
    """Ordering compares text when the cell or the value does not read as a number."""
    (data / "f.csv").write_text("k\napple\nbanana\n10\n9\n")
    await TransformSimpleTask().execute(
        {
            "input": "f.csv",
            "output": "o.csv",
            "filter": [{"column": "k", "op": "lt", "value": "b"}],
        },
        context(data),
    )
    assert (data / "o.csv").read_text().split() == ["k", "apple", "10", "9"]


async def test_casts_write_canonical_values(data: Path) -> None:
    """cast rewrites ints, floats and bools in one spelling; dates and str stay as they are."""
    (data / "f.csv").write_text("i,f,b,d\n+007,1.50,YES,2024-01-05\n-0,3,0,2024-12-31\n")
    await TransformSimpleTask().execute(
        {
            "input": "f.csv",
            "output": "o.csv",
            "cast": {"i": "int", "f": "float", "b": "bool", "d": "date"},
        },
        context(data),
    )
    written = (data / "o.csv").read_text()
    assert written == "i,f,b,d\n7,1.5,true,2024-01-05\n0,3.0,false,2024-12-31\n"


async def test_failed_cast_names_line_column_and_value_and_keeps_old_output(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """A value the cast cannot read fails the node; the previous output file is untouched."""
    (data / "people.csv").write_text(PEOPLE.replace("12,c3", "twelve,c3"))
    (data / "o.csv").write_text("old\n")
    summary = await run_nodes(
        engine_factory(), transform(input="people.csv", output="o.csv", cast={"amount": "int"})
    )
    assert summary["nodes"]["t"]["error"] == (
        "people.csv: line 4: cast: column 'amount': 'twelve' is not an int"
    )
    assert (data / "o.csv").read_text() == "old\n"
    assert not [n for n in os.listdir(data) if n.startswith(".")]  # no temporary file left


@pytest.mark.parametrize(
    ("step", "params"),
    [
        ("filter", {"filter": [{"column": "zip", "op": "eq", "value": "1"}]}),
        ("strip", {"strip": ["zip"]}),
        ("lowercase", {"lowercase": ["zip"]}),
        ("uppercase", {"uppercase": ["zip"]}),
        ("cast", {"cast": {"zip": "int"}}),
        ("select", {"select": ["name", "zip"]}),
        ("rename", {"rename": {"zip": "postcode"}}),
    ],
)
async def test_unknown_column_in_any_step_fails_naming_it(
    data: Path, step: str, params: dict[str, Any]
) -> None:
    """A step that names a column the input lacks fails before anything is written."""
    (data / "people.csv").write_text(PEOPLE)
    with pytest.raises(TaskFailed, match=rf"^{step}: no column 'zip' in people.csv \(columns:"):
        await TransformSimpleTask().execute(
            {"input": "people.csv", "output": "o.csv", **params}, context(data)
        )
    assert not (data / "o.csv").exists()


async def test_rename_must_target_selected_columns_and_stay_unique(data: Path) -> None:
    """Renaming a dropped column, or two columns to one name, is refused."""
    (data / "people.csv").write_text(PEOPLE)
    task, ctx = TransformSimpleTask(), context(data)
    with pytest.raises(TaskFailed, match="'code' is not among the selected columns"):
        await task.execute(
            {"input": "people.csv", "output": "o.csv", "select": ["name"], "rename": {"code": "c"}},
            ctx,
        )
    with pytest.raises(TaskFailed, match="two columns named 'name'"):
        await task.execute(
            {"input": "people.csv", "output": "o.csv", "rename": {"city": "name"}}, ctx
        )


def test_filter_values_must_fit_their_op() -> None:
    """Workflow validation refuses 'in' without a list, a list elsewhere, and non-text contains."""
    registry = TaskRegistry.load(BUILTINS, entry_point_group=None)
    params = {
        "input": "a.csv",
        "output": "b.csv",
        "filter": [
            {"column": "c", "op": "in", "value": "x"},
            {"column": "c", "op": "eq", "value": [1]},
            {"column": "c", "op": "contains", "value": 3},
            {"column": "c", "op": "in", "value": "{{ up.values }}"},
        ],
    }
    assert registry.check_params("transform_simple", params) == [
        "filter.0.value: op 'in' needs a list of values, got 'x'",
        "filter.1.value: op 'eq' needs one value, not a list",
        "filter.2.value: op 'contains' needs text, got 3",
    ]
    problems = registry.check_params(
        "transform_simple", {"input": "a", "output": "b", "cast": {"c": "decimal"}}
    )
    assert problems and "decimal" in problems[0]


async def test_path_escape_error_is_raised_directly(data: Path) -> None:
    """Called directly, a bad path raises PathEscapeError before any file is touched."""
    with pytest.raises(PathEscapeError, match="output"):
        await TransformSimpleTask().execute({"input": "a.csv", "output": "../b.csv"}, context(data))


async def test_cancellation_reaches_the_worker_thread() -> None:
    """Cancelling the awaiting task sets the flag the thread's loop checks, so it stops."""
    seen = threading.Event()
    started = threading.Event()

    def work(cancelled: threading.Event) -> None:
        started.set()
        if cancelled.wait(5):
            seen.set()

    task = asyncio.ensure_future(run_blocking(work))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(seen.wait, 5)


# -- memory ---------------------------------------------------------------------------------

_PEAK = """
import asyncio, json, sys
from pathlib import Path
from wfe_daemon.config import Settings
from wfe_daemon.runtime.task import Services, TaskContext
from wfe_daemon.tasks.csv.tasks import TransformSimpleTask, ValidateCsvTask
from wfe_daemon.tasks.sqlite import SaveDbTask
ctx = TaskContext(1, "mem", "v", 1, Settings(data_dir=Path(sys.argv[1])), Services())
name = sys.argv[2]
async def main():
    checked = await ValidateCsvTask().execute(
        {"path": name, "types": {"id": "int", "date": "date", "amount": "float"}}, ctx)
    cleaned = await TransformSimpleTask().execute({
        "input": name, "output": "out-" + name, "strip": ["region"], "uppercase": ["region"],
        "filter": [{"column": "amount", "op": "ge", "value": 1}], "cast": {"amount": "float"},
    }, ctx)
    loaded = await SaveDbTask().execute(
        {"source": "out-" + name, "database": name + ".db", "table": "t"}, ctx)
    return [checked["row_count"], cleaned["rows_out"], loaded["rows_written"]]
counts = asyncio.run(main())
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so this child would report
# at least the (larger) pytest process's peak, and the comparison below could never fail.
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps([counts, peak]))
"""


def _write_rows(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,date,region,amount,note\n")
        f.writelines(
            f'{i},2024-03-{i % 28 + 1:02d}, north ,{i % 997}.25,"a note, {i}"\n'
            for i in range(rows)
        )


def test_memory_does_not_grow_with_the_file(data: Path) -> None:
    """Peak RSS of validate -> transform -> save_db on 300k rows stays within 20 MB of the
    same on 30k rows."""
    peaks = {}
    for rows in (30_000, 300_000):
        _write_rows(data / f"{rows}.csv", rows)
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, str(data), f"{rows}.csv"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        counts, peaks[rows] = json.loads(done.stdout)
        kept = rows - rows // 997 - (1 if rows % 997 else 0)  # amount 0.25 is filtered out
        assert counts == [rows, kept, kept]
    assert peaks[300_000] - peaks[30_000] < 20 * 1024, peaks  # VmHWM is in KiB


# -- the daemon's own database ----------------------------------------------------------------


@pytest.mark.parametrize("output", ["wfe.db", "wfe.db-wal", "wfe.db-shm", "wfe.db.lock"])
async def test_transform_cannot_overwrite_the_daemon_database(
    engine_factory: Callable[..., Engine], data: Path, db_path: Path, output: str
) -> None:
    """With db_path inside data_dir, an output naming the database or a companion is refused."""
    assert db_path.parent == data
    (data / "in.csv").write_text("a\n1\n")
    companion = data / output
    before = companion.read_bytes() if companion.exists() else None
    summary = await run_nodes(engine_factory(), transform(input="in.csv", output=output))
    entry = summary["nodes"]["t"]
    assert entry["status"] == "FAILED"
    assert entry["error"] == f"output: {output!r} is the daemon's own database; refused"
    if output == "wfe.db":
        assert companion.read_bytes() == before
    elif before is None:
        assert not companion.exists()


# -- cancellation before publishing ---------------------------------------------------------


async def test_a_transform_cancelled_in_its_last_batch_publishes_nothing(
    data: Path, stall_last_batch: Callable[[str, float], threading.Event]
) -> None:
    """A timeout during the last batch leaves the old output: the rename never happens."""
    (data / "in.csv").write_text("a\n" + "".join(f"{i}\n" for i in range(25)))
    (data / "out.csv").write_text("old\n")
    stalled = stall_last_batch("24", 0.5)
    params = {"input": "in.csv", "output": "out.csv"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(TransformSimpleTask().execute(params, context(data)), 0.2)
    assert await asyncio.to_thread(stalled.wait, 5)
    await asyncio.sleep(0.3)  # ample time for the thread to finish, had it gone on
    assert (data / "out.csv").read_text() == "old\n"
    assert sorted(os.listdir(data)) == ["in.csv", "out.csv"]


# -- outputs that cannot be written ---------------------------------------------------------


async def test_an_unwritable_output_folder_is_named(
    engine_factory: Callable[..., Engine], data: Path
) -> None:
    """transform_simple into a folder that refuses new files fails naming the output as
    given, its folder and the reason (never a temporary file)."""
    (data / "sales.csv").write_text(SALES)
    with unwritable(data / "out") as why:
        summary = await run_nodes(
            engine_factory(), transform(input="sales.csv", output="out/clean.csv")
        )
    assert summary["nodes"]["t"]["error"] == (
        f"output: cannot write 'out/clean.csv': cannot create a file in the folder 'out': {why}"
    )


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("out/clean.csv", "cannot create its folder 'out': Not a directory"),
        ("out/2024/clean.csv", "cannot create its folder 'out/2024': Not a directory"),
        ("folder", "saving: Is a directory"),
    ],
)
async def test_an_output_that_cannot_be_a_file_is_named(
    engine_factory: Callable[..., Engine], data: Path, output: str, reason: str
) -> None:
    """An output under a regular file, or naming a folder, fails naming it and the reason."""
    (data / "sales.csv").write_text(SALES)
    (data / "out").write_text("a file, not a folder")
    (data / "folder").mkdir()
    summary = await run_nodes(engine_factory(), transform(input="sales.csv", output=output))
    assert summary["nodes"]["t"]["error"] == f"output: cannot write {output!r}: {reason}"
    left = [p.name for p in os.scandir(data) if ".tmp" in p.name]
    assert left == []  # no temporary file left behind
