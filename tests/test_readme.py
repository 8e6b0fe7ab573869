"""The README's workflow and result samples stay true to examples/hello.json and to a run."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HELLO = ROOT / "examples" / "hello.json"
NIGHTLY = ROOT / "examples" / "nightly"
VARIABLE = {"run_id", "started_at", "finished_at", "duration"}


def _json_block_after(heading: str, language: str = "json") -> str:
    """The text of the first ```json (or other ``language``) block after the line
    ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index(f"\n{heading}\n") :]
    start = after.index(f"```{language}\n") + len(f"```{language}\n")
    return after[start : after.index("```\n", start)]


def _stable(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without what differs between two runs of one file (ids, times)."""
    nodes = {
        node_id: {k: v for k, v in entry.items() if k not in VARIABLE}
        for node_id, entry in summary["nodes"].items()
    }
    return {**{k: v for k, v in summary.items() if k not in VARIABLE}, "nodes": nodes}


def test_the_workflow_sample_is_examples_hello_json() -> None:
    """The README's workflow file is examples/hello.json, character for character."""
    assert _json_block_after("## A workflow file") == HELLO.read_text(encoding="utf-8")


def test_the_result_sample_is_what_executing_hello_prints(tmp_path: Path) -> None:
    """The README's result summary matches a real `execute` of examples/hello.json but for
    ids and times, and its own times agree with its durations."""
    sample = json.loads(_json_block_after("## The result summary"))
    done = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "execute", str(HELLO)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
        env={"PATH": "/usr/bin:/bin", "WFE_DB_PATH": str(tmp_path / "h.db")},
    )
    assert done.returncode == 0, done.stderr
    assert _stable(sample) == _stable(json.loads(done.stdout))
    for entry in [sample, *sample["nodes"].values()]:
        span = datetime.fromisoformat(entry["finished_at"]) - datetime.fromisoformat(
            entry["started_at"]
        )
        assert abs(span.total_seconds() - entry["duration"]) < 0.001, entry


def test_the_nightly_pipeline_samples_are_the_example_files() -> None:
    """The README's nightly schedule file and configuration are examples/nightly's,
    character for character."""
    heading = "### A nightly pipeline"
    schedule = NIGHTLY / "schedules" / "nightly-sales.json"
    assert _json_block_after(heading) == schedule.read_text(encoding="utf-8")
    config = NIGHTLY / "wfe.toml"
    assert _json_block_after(heading, "toml") == config.read_text(encoding="utf-8")
