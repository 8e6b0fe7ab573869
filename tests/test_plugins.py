"""Plugins: a task type installed from another package through the ``wfe_daemon.tasks`` group.

The plugin under ``tests/plugin_pkg`` is installed with pip into a throwaway folder
(``--target``), which the CLI subprocess gets on its PYTHONPATH: ``importlib.metadata``
then finds the entry point in its dist-info. The project's own environment is untouched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
ENTRY_POINT = 'reverse = "wfe_test_plugin:ReverseTask"'
CLASHING_ENTRY_POINT = 'echo = "wfe_test_plugin:ShadowEchoTask"'

Install = Callable[[str], Path]


def _pip_install(source: Path, target: Path) -> None:
    """Build and install ``source`` into ``target`` with pip, offline."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Install a variant of the plugin once per module; return its site folder.

    ``install("plain")`` is the package as shipped; ``install("clash")`` also registers
    ``echo``, a type the built-ins already define.
    """
    installed: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in installed:
            root = tmp_path_factory.mktemp(f"plugin-{variant}")
            source = root / "src"
            # Build from a copy: pip builds in place and would litter tests/plugin_pkg.
            shutil.copytree(PLUGIN_PKG, source)
            if variant == "clash":
                pyproject = source / "pyproject.toml"
                text = pyproject.read_text()
                assert ENTRY_POINT in text
                pyproject.write_text(
                    text.replace(ENTRY_POINT, f"{ENTRY_POINT}\n{CLASHING_ENTRY_POINT}")
                )
            _pip_install(source, root / "site")
            installed[variant] = root / "site"
        return installed[variant]

    return get


def test_installed_plugin_is_listed(run_cli: Callable[..., Any], install: Install) -> None:
    """``tasks --json`` lists the plugin's type beside the built-ins."""
    result = run_cli("tasks", "--json", env={"PYTHONPATH": str(install("plain"))})
    assert result.returncode == 0, result.stderr
    types = {task["type"]: task for task in json.loads(result.stdout)}
    assert types["reverse"]["description"] == "Returns `text` reversed."
    assert {"echo", "sleep", "reverse"} <= set(types)


def test_workflow_runs_a_plugin_task(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path], install: Install
) -> None:
    """A workflow using the plugin's type runs to SUCCESS, its output feeding the next node."""
    path = write_workflow(
        {
            "name": "plugin",
            "nodes": [
                {"id": "flip", "type": "reverse", "params": {"text": "stressed"}},
                {
                    "id": "show",
                    "type": "echo",
                    "depends_on": ["flip"],
                    "params": {"word": "{{ flip.text }}"},
                },
            ],
        }
    )
    result = run_cli("execute", path, env={"PYTHONPATH": str(install("plain"))})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "SUCCESS"
    assert summary["nodes"]["flip"]["output"] == {"text": "desserts"}
    assert summary["nodes"]["show"]["output"] == {"word": "desserts"}


def test_plugin_type_unknown_without_the_plugin(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """Without the plugin installed, the same workflow is rejected: nothing leaks in."""
    path = write_workflow(
        {
            "name": "plugin",
            "nodes": [
                {"id": "flip", "type": "reverse", "params": {"text": "stressed"}},
            ],
        }
    )
    result = run_cli("execute", path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["status"] == "REJECTED"


def test_plugin_clashing_with_a_builtin_is_refused(
    run_cli: Callable[..., Any], install: Install
) -> None:
    """A plugin type named like a built-in stops the CLI: exit 2, one line naming both."""
    result = run_cli("tasks", "--json", env={"PYTHONPATH": str(install("clash"))})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "wfe-daemon: task type 'echo' is defined twice: "
        "built-in and plugin wfe_test_plugin:ShadowEchoTask\n"
    )
