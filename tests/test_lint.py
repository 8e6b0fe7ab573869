"""The code stays as STYLE.md asks: ruff's rules and format, and mypy --strict, all pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = ("src", "tests", "benchmarks")


def _passes(*args: str, timeout: float) -> None:
    """Run ``python -m ARGS`` at the repository root; it must exit 0 (its output otherwise)."""
    result = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_ruff_finds_nothing() -> None:
    """ruff check (the rules in pyproject.toml, mccabe 10) passes on src, tests and benchmarks."""
    _passes("ruff", "check", *TREES, timeout=110)


@pytest.mark.timeout(120)
def test_ruff_format_changes_nothing() -> None:
    """ruff format --check finds every file of src, tests and benchmarks already formatted."""
    _passes("ruff", "format", "--check", *TREES, timeout=110)


@pytest.mark.timeout(300)
def test_mypy_strict_passes() -> None:
    """mypy --strict (configured in pyproject.toml) passes on the package."""
    _passes("mypy", timeout=290)
