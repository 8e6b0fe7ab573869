"""The soak benchmark still runs: ``python -m benchmarks.soak`` for a few seconds.

No memory figure is asserted here; the hour-long run's figures live in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def _soak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def test_short_soak_reports_and_checks_every_file(tmp_path: Path) -> None:
    """A 3-second soak feeds the real daemon, accounts for every file and prints its table."""
    before = RESULTS.read_bytes()
    samples = tmp_path / "samples.jsonl"
    done = _soak("--duration", "3", "--interval", "1", "--samples", str(samples))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| min | workflows done | RSS MB |" in done.stdout
    assert "none lost or doubled" in done.stdout
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert rows[-1]["done"] == rows[-1]["dropped"] > 0
    assert RESULTS.read_bytes() == before


def test_probe_adds_allocator_and_sqlite_figures(tmp_path: Path) -> None:
    """With --probe (and --trim, and extra environment) the samples carry malloc and SQLite."""
    samples = tmp_path / "samples.jsonl"
    done = _soak(
        "--duration",
        "3",
        "--interval",
        "1",
        "--probe",
        "--trim",
        "--env",
        "MALLOC_ARENA_MAX=2",
        "--samples",
        str(samples),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    last = json.loads(samples.read_text().splitlines()[-1])
    assert last["sqlite_used"] > 0 and last["malloc_used"] > 0 and last["py_blocks"] > 0
    assert "| SQLite MB |" in done.stdout


def test_suite_rewrite_keeps_the_soak_section(tmp_path: Path) -> None:
    """Rewriting RESULTS.md for other benchmarks keeps the soak's section and the notes."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.__main__ import rewrite
    finally:
        sys.path.remove(str(ROOT))
    results = tmp_path / "RESULTS.md"
    results.write_bytes(RESULTS.read_bytes())
    rewrite(results, {"soak": "## Soak\n\nan hour of it\n"}, "python -m benchmarks.soak", "d1")
    rewrite(results, {"idle": "## 8. Idle\n\nagain\n"}, "python -m benchmarks --only idle", "d2")
    text = results.read_text()
    assert "an hour of it" in text and "again" in text
    assert text.index("<!-- bench:soak -->") > text.index("<!-- bench:validate -->")
    assert (
        text.split("hand-written notes below")[1]
        == RESULTS.read_text().split("hand-written notes below")[1]
    )


def test_bad_arguments_get_a_usage_error() -> None:
    """A zero duration or an --env without '=' is refused with a message, not a traceback."""
    for args, message in (
        (["--duration", "0"], "must be positive"),
        (["--duration", "1", "--env", "X"], "KEY=VALUE"),
    ):
        done = _soak(*args)
        assert done.returncode == 2
        assert message in done.stderr and "Traceback" not in done.stderr
