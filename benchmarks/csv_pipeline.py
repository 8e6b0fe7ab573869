"""CSV pipeline benchmark (RESULTS.md row 7).

One million generated sales rows (``id,date,region,amount,note``) through
``validate_csv -> transform_simple -> save_db`` in the real engine
with persistence, in a fresh child process (``python -m benchmarks.csv_pipeline child ...``)
whose ``VmHWM`` is its peak RSS (``ru_maxrss`` would carry the parent's peak over
``exec``). Baseline: the ``sqlite3`` shell's ``.import`` of the
same file into a new database, timed in the same run (skipped, with a note, when the
``sqlite3`` command is absent: ``apt-get install sqlite3``).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks._suite import Context, Figure, Section, proc_status_kb, ratios
from wfe_daemon.runtime.eventloop import run as run_on_loop

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("north", "South", " east ", "WEST", "central")
NOTES = ("", "paid", "refund requested", "gift, wrapped", 'said "thanks"', "priority")


def generate(path: Path, rows: int) -> None:
    """A realistic sales file: ids, ISO dates, mixed-case regions, amounts, quoted notes."""
    rng = random.Random(7)
    start = date(2023, 1, 1)
    dates = [(start + timedelta(days=d)).isoformat() for d in range(730)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("id", "date", "region", "amount", "note"))
        writer.writerows(
            (i, dates[i % 730], REGIONS[i % 5], f"{rng.uniform(-50, 5000):.2f}", NOTES[i % 6])
            for i in range(1, rows + 1)
        )


WORKFLOW: dict[str, Any] = {
    "name": "csv pipeline benchmark",
    "nodes": [
        {
            "id": "check",
            "type": "validate_csv",
            "params": {
                "path": "sales.csv",
                "required_columns": ["id", "date", "amount"],
                "types": {"id": "int", "date": "date", "amount": "float"},
            },
        },
        {
            "id": "clean",
            "type": "transform_simple",
            "depends_on": ["check"],
            "params": {
                "input": "sales.csv",
                "output": "clean.csv",
                "filter": [{"column": "amount", "op": "ge", "value": 0}],
                "strip": ["region"],
                "lowercase": ["region"],
                "cast": {"amount": "float"},
                "select": ["id", "date", "region", "amount", "note"],
                "rename": {"amount": "amount_eur"},
            },
        },
        {
            "id": "load",
            "type": "save_db",
            "depends_on": ["clean"],
            "params": {
                "source": "clean.csv",
                "database": "sales.db",
                "table": "sales",
                "mode": "replace",
            },
        },
    ],
}


def child(data_dir: str, db: str) -> None:
    """Run the pipeline once through the engine; print seconds, node times and peak RSS."""
    from wfe_daemon.config import Settings
    from wfe_daemon.logs import configure_logging
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.runtime.registry import TaskRegistry
    from wfe_daemon.service.submission import submit
    from wfe_daemon.store.database import Store
    from wfe_daemon.tasks import BUILTINS

    with open("/dev/null", "w") as devnull:
        configure_logging("INFO", devnull)
        settings = Settings(data_dir=Path(data_dir), db_path=Path(db))

        async def run() -> tuple[dict[str, Any], float]:
            async with Store.open(settings.db_path) as store:
                registry = TaskRegistry.load(BUILTINS)
                engine = Engine(registry, store, settings)
                started = time.perf_counter()
                data = json.dumps(WORKFLOW).encode()
                summary = await submit(
                    data, registry=registry, store=store, engine=engine, source="bench"
                )
                return summary, time.perf_counter() - started

        summary, seconds = run_on_loop(run())
    print(
        json.dumps(
            {
                "status": summary["status"],
                "seconds": seconds,
                "nodes": {
                    k: {
                        "duration": v.get("duration"),
                        "output": v.get("output"),
                        "error": v.get("error"),
                    }
                    for k, v in summary["nodes"].items()
                },
                "maxrss_kb": proc_status_kb("VmHWM"),
            }
        )
    )


def _pipeline(data: Path, db: Path) -> dict[str, Any]:
    (data / "sales.db").unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.csv_pipeline", "child", str(data), str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["status"] != "SUCCESS":
        raise RuntimeError(f"pipeline child: {result}")
    return result


def _import(cli: str, source: Path, db: Path) -> float:
    """Seconds for the sqlite3 shell to ``.import`` ``source`` into a new database."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [cli, str(db), ".mode csv", f".import {source} sales"],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return time.perf_counter() - started


def csv_pipeline(ctx: Context) -> Section:
    """Row 7: a million CSV rows through the three tasks, against ``.import``."""
    rows = ctx.size(1_000_000, 2_000)
    data = ctx.tmp / "data"
    data.mkdir()
    ctx.progress(f"csv: generating {rows:,} rows")
    generate(data / "sales.csv", rows)
    size_mb = (data / "sales.csv").stat().st_size / 1e6
    section = Section(
        "csv_pipeline",
        f"7. {rows:,} CSV rows: validate_csv -> transform_simple -> save_db",
        "A fresh `python -m benchmarks.csv_pipeline child DATA DB` process runs the workflow "
        "`WORKFLOW` of `benchmarks/csv_pipeline.py` (validate 3 typed columns; filter "
        "amount >= 0, strip + lowercase region, cast amount to float, select, rename; "
        "save_db replace) through `Engine` with persistence and INFO logs to /dev/null; the "
        "time is `submit()` to summary, peak RSS the child's `VmHWM`. Baseline: "
        "`sqlite3 NEW.db '.mode csv' '.import sales.csv sales'`, timed in the same run.",
    )
    cli = shutil.which("sqlite3")
    seconds, peaks, baseline, nodes = [], [], [], []
    for run in range(ctx.runs):
        ctx.progress(f"csv: run {run + 1}/{ctx.runs}")
        result = _pipeline(data, ctx.tmp / f"wfe-{run}.db")
        if result["nodes"]["load"]["output"]["rows_written"] <= 0:
            raise RuntimeError(f"nothing loaded: {result}")
        seconds.append(result["seconds"])
        peaks.append(result["maxrss_kb"] / 1024)
        nodes.append({k: v["duration"] for k, v in result["nodes"].items()})
        if cli is not None:
            baseline.append(_import(cli, data / "sales.csv", ctx.tmp / "import.db"))
    section.add(Figure("pipeline rows per second", [rows / s for s in seconds], "rows/s"))
    section.add(Figure("pipeline time", seconds, "s"))
    for node in ("check", "clean", "load"):
        section.add(Figure(f"  of which `{node}`", [n[node] for n in nodes], "s"))
    if baseline:
        section.add(Figure("`sqlite3` shell `.import` time", baseline, "s"))
        section.add(Figure("pipeline time / `.import` time", ratios(seconds, baseline), "x", 3.0))
    else:
        section.notes.append(
            "`sqlite3` command not found: the `.import` baseline was "
            "skipped (install it with `apt-get install sqlite3`)."
        )
    section.add(Figure("peak RSS of the pipeline process (VmHWM)", peaks, "MB", 150.0))
    section.notes.append(f"Input file {size_mb:.1f} MB. MB = 2^20 bytes for RSS.")
    return section


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"] and len(sys.argv) == 4:
        child(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m benchmarks.csv_pipeline child DATA_DIR DB")
