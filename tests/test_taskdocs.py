"""Tests for the generated task reference, ``docs/tasks.md``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from wfe_daemon.cli.taskdocs import COMMAND, render
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.tasks import BUILTINS

DOC = Path(__file__).parent.parent / "docs" / "tasks.md"


@pytest.fixture
def builtins() -> TaskRegistry:
    """The built-in task types only, as the documentation command loads them."""
    return TaskRegistry.load(BUILTINS, entry_point_group=None)


def test_docs_are_not_stale(builtins: TaskRegistry) -> None:
    """docs/tasks.md matches the task classes (refresh: python -m wfe_daemon.cli.taskdocs)."""
    assert DOC.read_text(encoding="utf-8") == render(builtins), f"stale: run {COMMAND}"


def test_every_builtin_and_its_required_params_are_documented(builtins: TaskRegistry) -> None:
    """Each built-in type has a section, and each of its required params a table row."""
    text = render(builtins)
    assert len(BUILTINS) == len(builtins)
    for task in builtins:
        assert f"## `{task.type}`: {task.display_name}" in text
        for name in task.params_schema.get("required", ()):
            assert f"| `{name}` |" in text


def test_the_command_is_documented_at_the_top(builtins: TaskRegistry) -> None:
    """The file names its regeneration command within its first lines."""
    head = render(builtins).splitlines()[:10]
    assert any(COMMAND in line for line in head)


class _Documented:
    """A task type exercising every part of the renderer."""

    type: ClassVar[str] = "documented"
    display_name: ClassVar[str] = "Documented"
    description: ClassVar[str] = "Exists to be documented."
    category: ClassVar[str] = "test"
    default_timeout: ClassVar[float | None] = 2.5
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "mode": {
                "enum": ["append", "replace"],
                "default": "append",
                "description": "How to write | carefully.",
            },
            "columns": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "filter": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"column": {"type": "string"}, "value": {}},
                    "required": ["column"],
                },
            },
        },
        "required": ["mode"],
        "additionalProperties": False,
    }
    output_doc: ClassVar[dict[str, str]] = {"rows": "How many rows were written."}
    failure_doc: ClassVar[tuple[str, ...]] = ("The table name is not an identifier.",)

    async def execute(self, params: Any, ctx: Any) -> Any:
        return {}


def test_render_reads_schema_output_and_failure_docs() -> None:
    """Enums, defaults, array item types, nested fields, output_doc and failure_doc all show."""
    text = render(TaskRegistry([_Documented()]))
    assert "- Default timeout: 2.5 s" in text
    assert (
        '| `mode` | one of `"append"`, `"replace"` | yes | `"append"` | '
        "How to write \\| carefully. |"
    ) in text
    assert "| `columns` | array of string (at least 1 item) | no |  |  |" in text
    assert "| `filter[].column` | string | yes |  |  |" in text
    assert "| `filter[].value` | any | no |  |  |" in text
    assert "| `rows` | How many rows were written. |" in text
    assert "- The table name is not an identifier." in text
    assert "Other params are accepted" not in text


def test_check_flag_reports_a_stale_file(tmp_path: Path) -> None:
    """``--check`` exits 1 naming the refresh command when the file differs, 0 once written."""
    target = tmp_path / "tasks.md"
    target.write_text("old\n")

    def taskdocs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wfe_daemon.cli.taskdocs", "--output", str(target), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    stale = taskdocs("--check")
    assert stale.returncode == 1
    assert stale.stderr == f"{target} is stale; refresh it with: {COMMAND}\n"
    assert taskdocs().returncode == 0
    assert taskdocs("--check").returncode == 0
    assert target.read_text().startswith("# Task reference\n")
