"""The shipped examples stay true: each one validates (or is rejected) as the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_example_validates_as_documented(path: Path, tmp_path: Path) -> None:
    """Every example is valid, except invalid.json, whose problems are all listed."""
    result = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    if path.name == "invalid.json":
        assert result.returncode == 2
        problems = result.stderr.splitlines()
        assert "cycle: a -> b -> a" in problems
        assert any("unknown type 'no_such_type'" in line for line in problems)
        assert any("'soon' is not of type 'number'" in line for line in problems)
    else:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""


def test_hello_example_runs_with_typed_references(tmp_path: Path) -> None:
    """examples/hello.json runs to SUCCESS and its references resolve as documented."""
    import json

    result = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "execute", str(EXAMPLES / "hello.json")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "WFE_DB_PATH": str(tmp_path / "h.db")},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    report = summary["nodes"]["report"]["output"]
    assert report == {"text": "hello x3 after 0.2s", "count": 3}
