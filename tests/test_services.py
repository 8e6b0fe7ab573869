"""The registry as the commands and the daemon build it from the settings.

A task type the settings turn off (``shell`` without ``enable_shell``) stays known, but a
workflow that uses it is rejected up front, before anything of it runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, query, wait_result, wait_until
from wfe_daemon.config import Settings
from wfe_daemon.core.model import parse_workflow
from wfe_daemon.errors import WorkflowRejected
from wfe_daemon.service.wiring import load_registry, open_engine
from wfe_daemon.store.database import Store

Cli = Callable[..., subprocess.CompletedProcess[str]]
Writer = Callable[..., Path]

DISABLED = "node 'sh': shell is disabled: set enable_shell = true"

SHELL_DOC: dict[str, Any] = {
    "name": "with shell",
    "nodes": [
        {"id": "first", "type": "echo", "params": {"x": 1}},
        {"id": "sh", "type": "shell", "depends_on": ["first"], "params": {"argv": ["true"]}},
    ],
}


def test_validate_refuses_a_shell_node_while_shell_is_disabled(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """``validate`` of a shell node exits 2 saying how to enable it; enabled, it passes."""
    path = write_workflow(SHELL_DOC)

    refused = run_cli("validate", path)
    enabled = run_cli("validate", path, env={"WFE_ENABLE_SHELL": "true"})

    assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", DISABLED + "\n")
    assert (enabled.returncode, enabled.stderr) == (0, "")


def test_validate_reports_the_disabled_shell_beside_its_other_problems(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """The refusal is one problem among the rest: bad params of the same node still show."""
    doc = {"name": "w", "nodes": [{"id": "sh", "type": "shell", "params": {"argv": "ls -l"}}]}

    result = run_cli("validate", write_workflow(doc))

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == DISABLED
    assert len(lines) == 2 and lines[1].startswith("node 'sh': params: argv: ")


def test_execute_rejects_it_before_any_node_runs(
    run_cli: Cli, write_workflow: Writer, sql: Callable[..., list[dict[str, Any]]]
) -> None:
    """``execute`` records a REJECTED run with the refusal, and its echo node never ran."""
    result = run_cli("execute", write_workflow(SHELL_DOC))

    assert result.returncode == 2, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["errors"], summary["nodes"]) == ("REJECTED", [DISABLED], {})
    assert sql("SELECT count(*) AS n FROM noderun") == [{"n": 0}]


def test_graph_of_a_file_refuses_it_too(run_cli: Cli, write_workflow: Writer) -> None:
    """``graph FILE`` validates through the same registry and reports the same problem."""
    result = run_cli("graph", write_workflow(SHELL_DOC))

    assert (result.returncode, result.stderr) == (2, DISABLED + "\n")


def test_the_daemon_rejects_a_dropped_shell_workflow(daemons: Daemons) -> None:
    """A daemon without enable_shell writes a REJECTED result naming the setting, no node runs,
    and the file moves to rejected/."""
    daemons.start()
    drop(daemons.inbox, "sh.json", SHELL_DOC)

    result = wait_result(daemons.outbox, "sh")

    assert (result["status"], result["errors"]) == ("REJECTED", [DISABLED])
    wait_until(lambda: (daemons.inbox / "rejected" / "sh.json").exists(), 10, "rejected/")
    assert query(daemons.db_path, "SELECT count(*) AS n FROM noderun") == [{"n": 0}]


def test_the_daemon_runs_it_once_shell_is_enabled(daemons: Daemons) -> None:
    """The same file runs to SUCCESS under a daemon started with WFE_ENABLE_SHELL=1."""
    daemons.start(WFE_ENABLE_SHELL="1")
    drop(daemons.inbox, "sh.json", SHELL_DOC)

    assert wait_result(daemons.outbox, "sh")["status"] == "SUCCESS"


def test_a_registry_built_from_settings_refuses_only_what_they_disable() -> None:
    """``load_registry`` keeps shell listed either way; only its use is refused while off."""
    off = load_registry(Settings())
    on = load_registry(Settings(enable_shell=True))

    assert "shell" in off and "shell" in on
    with pytest.raises(WorkflowRejected) as refused:
        parse_workflow(SHELL_DOC, off)
    assert refused.value.problems == [DISABLED]
    assert [node.type for node in parse_workflow(SHELL_DOC, on).nodes] == ["echo", "shell"]


async def test_open_engine_builds_the_engine_on_what_it_is_given(db_path: Path) -> None:
    """``open_engine`` builds the engine over the store, registry and settings passed in."""
    settings = Settings(db_path=db_path)
    registry = load_registry(settings)

    async with Store.open(db_path) as store, open_engine(settings, registry, store) as engine:
        assert (engine.store, engine.registry, engine.settings) == (store, registry, settings)
