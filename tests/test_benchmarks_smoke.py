"""The benchmark suite still runs: ``python -m benchmarks --quick`` (tiny sizes, one run).

No timing is asserted here; the figures live in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_suite_runs_every_benchmark() -> None:
    """Every registered benchmark runs in smoke mode, reports, and RESULTS.md is untouched."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.__main__ import BENCHMARKS, RESULTS
    finally:
        sys.path.remove(str(ROOT))
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for name in BENCHMARKS:
        assert f"[{name}] done" in done.stdout, f"{name} missing:\n{done.stdout[-4000:]}"
    assert "| figure | median | min | max |" in done.stdout
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == before


def test_profile_engine_runs_every_ablation() -> None:
    """The ablation tool still reaches the internals it patches (tiny workflow, one run)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_engine", "--runs", "1", "--nodes", "50",
         "--shape", "chain"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| no output encoding (engine.encode_output) |" in done.stdout
    assert "| bare asyncio scheduler |" in done.stdout
