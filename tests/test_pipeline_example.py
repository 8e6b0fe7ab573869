"""The contract's example pipeline, run for real: a local HTTP server, CSV files, SQLite."""

from __future__ import annotations

import csv
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sales_server() -> Iterator[int]:
    """``python -m http.server`` on 127.0.0.1 serving examples/data, as the README shows."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(EXAMPLES / "data"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _execute(example: str, port: int, tmp_path: Path) -> tuple[int, dict]:
    text = (EXAMPLES / example).read_text().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    workflow = tmp_path / example
    workflow.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "execute", str(workflow)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "WFE_DATA_DIR": str(tmp_path / "data"),
            "WFE_DB_PATH": str(tmp_path / "wfe.db"),
        },
    )
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def _expected_rows() -> list[tuple[str, ...]]:
    with (EXAMPLES / "data" / "sales.csv").open(newline="") as file:
        return [
            (
                row["id"],
                row["date"],
                row["region"].upper(),
                str(float(row["amount"])),
                row["note"].strip(),
            )
            for row in csv.DictReader(file)
            if float(row["amount"]) >= 100
        ]


def test_pipeline_loads_exactly_the_expected_rows(sales_server: int, tmp_path: Path) -> None:
    """fetch -> validate -> transform -> save_db loads the filtered rows; a rerun replaces them."""
    for _ in range(2):  # mode "replace": the second run leaves the same rows
        code, summary = _execute("pipeline.json", sales_server, tmp_path)
        assert code == 0, summary
        nodes = summary["nodes"]
        expected = _expected_rows()
        assert nodes["check"]["output"]["row_count"] == 40
        assert nodes["clean"]["output"]["rows_out"] == len(expected)
        assert nodes["load"]["output"]["rows_written"] == len(expected)
        with sqlite3.connect(tmp_path / "data" / "warehouse.db") as db:
            rows = db.execute(
                "SELECT id, date, region, amount_eur, note FROM sales ORDER BY CAST(id AS INT)"
            ).fetchall()
        assert rows == expected


def test_fan_out_fan_in_counts_every_region(sales_server: int, tmp_path: Path) -> None:
    """Three transforms run from one download and the report joins their counts."""
    code, summary = _execute("fan-out-fan-in.json", sales_server, tmp_path)
    assert code == 0, summary
    rows = summary["nodes"]["report"]["output"]["rows"]
    assert sum(rows.values()) == 40
    with (EXAMPLES / "data" / "sales.csv").open(newline="") as file:
        north = sum(row["region"] == "north" for row in csv.DictReader(file))
    assert rows["north"] == north
