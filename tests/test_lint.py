"""The code stays as STYLE.md asks: ruff's rules and mypy --strict both pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_ruff_finds_nothing() -> None:
    """ruff check (the rules in pyproject.toml, mccabe 10) passes on src, tests and benchmarks."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_ruff_format_changes_nothing() -> None:
    """ruff format --check finds every file of src, tests and benchmarks already formatted."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "benchmarks"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_passes() -> None:
    """mypy --strict (configured in pyproject.toml) passes on the package."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=290,
    )
    assert result.returncode == 0, result.stdout + result.stderr
