"""The ``python`` task against functions that misbehave, as a user meets them: what they
raise or return fails their node with a clear error, never a traceback, a hang or a
crash; and the ``python_modules`` allowlist holds against names that come from elsewhere."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, wait_result

Cli = Callable[..., subprocess.CompletedProcess[str]]
Writer = Callable[..., Path]

FAULTS = '''
"""Functions that misbehave."""
import asyncio
from os import getcwd
from pathlib import Path


def holds_itself():
    items = []
    items.append(items)
    return items


def dict_holds_itself():
    value = {}
    value["self"] = value
    return value


async def async_holds_itself():
    return dict_holds_itself()


def deep(levels):
    value = []
    for _ in range(levels):
        value = [value]
    return value


class Unreadable(Exception):
    def __str__(self):
        raise RuntimeError("no message")


def unreadable():
    raise Unreadable()


async def async_unreadable():
    raise Unreadable()


def fetch_failed():
    raise ValueError("GET https://bob:hunter2pw@example.com/x?token=abc123tok failed")


def generator_exit():
    raise GeneratorExit("closed")


def stop_iteration():
    raise StopIteration(5)


def cancelled():
    raise asyncio.CancelledError("its own")


async def async_cancelled():
    raise asyncio.CancelledError("its own")


class Greeter:
    def hello(self, who):
        return f"hello {who}"


GREETER = Greeter()
TARGET = Path(__file__).with_name("target.txt")
'''


@pytest.fixture
def faults_env(tmp_path: Path) -> dict[str, str]:
    """The environment enabling the python task, with the module ``faults`` on its path."""
    root = tmp_path / "pymods"
    root.mkdir()
    (root / "faults.py").write_text(textwrap.dedent(FAULTS))
    return {"PYTHONPATH": str(root), "WFE_ENABLE_PYTHON": "1"}


def node(node_id: str, function: str, **kwargs: Any) -> dict[str, Any]:
    """A ``python`` node calling ``function`` with ``kwargs``, with a short timeout."""
    params = {"function": function, "kwargs": kwargs}
    return {"id": node_id, "type": "python", "timeout": 20, "params": params}


def execute(run_cli: Cli, write_workflow: Writer, env: dict[str, str], *nodes: Any) -> Any:
    """``wfe-daemon execute`` of a workflow of ``nodes``: the summary's errors by node."""
    path = write_workflow({"name": "faults", "nodes": list(nodes)})
    done = run_cli("execute", path, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    return {key: entry.get("error") for key, entry in summary["nodes"].items()}


def test_a_return_value_holding_itself_or_nested_too_deep_fails_its_node(
    run_cli: Cli, write_workflow: Writer, faults_env: dict[str, str]
) -> None:
    """A list or dict that holds itself, from a plain or async function, and a list nested
    5000 deep each fail their node naming the nesting; one 200 deep is an output."""
    errors = execute(
        run_cli,
        write_workflow,
        faults_env,
        node("list", "faults:holds_itself"),
        node("dict", "faults:dict_holds_itself"),
        node("async", "faults:async_holds_itself"),
        node("deep", "faults:deep", levels=5000),
        node("fine", "faults:deep", levels=200),
    )

    nesting = "output: nested deeper than 250 levels (or it holds itself)"
    assert errors == {
        "list": nesting,
        "dict": nesting,
        "async": nesting,
        "deep": nesting,
        "fine": None,
    }


def test_an_exception_whose_message_cannot_be_read_fails_its_node(
    run_cli: Cli, write_workflow: Writer, faults_env: dict[str, str]
) -> None:
    """An exception whose ``__str__`` raises, from a plain or an async function, fails
    its node with its type and a note in place of the message."""
    errors = execute(
        run_cli,
        write_workflow,
        faults_env,
        node("plain", "faults:unreadable"),
        node("async", "faults:async_unreadable"),
    )

    expected = "Unreadable: <its message could not be read: RuntimeError>"
    assert errors == {"plain": expected, "async": expected}


def test_the_debug_traceback_hides_url_credentials_as_the_error_does(
    run_cli: Cli, write_workflow: Writer, faults_env: dict[str, str]
) -> None:
    """A message quoting a URL with a password and a token shows both as ``***`` in the
    node's error and in the ``python.traceback`` line logged at debug level."""
    path = write_workflow({"name": "url", "nodes": [node("get", "faults:fetch_failed")]})

    done = run_cli("execute", path, env={**faults_env, "WFE_LOG_LEVEL": "DEBUG"})

    error = json.loads(done.stdout)["nodes"]["get"]["error"]
    assert error == "ValueError: GET https://***@example.com/x?token=*** failed"
    logged = [json.loads(line) for line in done.stderr.splitlines() if "python.traceback" in line]
    assert len(logged) == 1
    assert "https://***@example.com/x?token=*** failed" in logged[0]["traceback"]
    assert "hunter2pw" not in done.stderr
    assert "abc123tok" not in done.stderr


def test_generator_exit_stop_iteration_and_cancelled_error_fail_only_their_node(
    run_cli: Cli, write_workflow: Writer, faults_env: dict[str, str]
) -> None:
    """``GeneratorExit``, ``StopIteration`` and a ``CancelledError`` of the function's own
    (not a cancel of the node) fail their node at once, not at its timeout, and the run
    ends."""
    errors = execute(
        run_cli,
        write_workflow,
        faults_env,
        node("exit", "faults:generator_exit"),
        node("stop", "faults:stop_iteration"),
        node("cancelled", "faults:cancelled"),
        node("async_cancelled", "faults:async_cancelled"),
    )

    assert errors == {
        "exit": "GeneratorExit: closed",
        "stop": "RuntimeError: coroutine raised StopIteration",
        "cancelled": "CancelledError: its own",
        "async_cancelled": "CancelledError: its own",
    }


def test_the_allowlist_refuses_names_and_instances_from_other_modules(
    run_cli: Cli, write_workflow: Writer, faults_env: dict[str, str], tmp_path: Path
) -> None:
    """Under ``python_modules = faults``, a name the module imported from ``os`` and a
    method of its ``pathlib.Path`` object are refused (no file is written), while a
    method of an instance of the module's own class runs."""
    env = {**faults_env, "WFE_PYTHON_MODULES": "faults"}
    path = write_workflow(
        {
            "name": "allow",
            "nodes": [
                node("alias", "faults:getcwd"),
                node("write", "faults:TARGET.write_text", data="written"),
                node("own", "faults:GREETER.hello", who="you"),
            ],
        }
    )

    done = run_cli("execute", path, env=env)

    nodes = json.loads(done.stdout)["nodes"]
    assert nodes["alias"]["error"] == (
        "faults:getcwd: getcwd comes from module 'posix', outside python_modules (faults)"
    )
    assert nodes["write"]["error"] == (
        "faults:TARGET.write_text: TARGET comes from module 'pathlib', outside python_modules"
        " (faults)"
    )
    assert nodes["own"]["output"] == "hello you"
    assert not (tmp_path / "pymods" / "target.txt").exists()


def test_a_function_ending_in_a_line_break_is_rejected_when_validated(
    run_cli: Cli, write_workflow: Writer, faults_env: dict[str, str]
) -> None:
    """``"faults:deep\\n"`` is refused by ``validate``, as it would fail when run."""
    path = write_workflow({"name": "nl", "nodes": [node("a", "faults:deep\n")]})

    done = run_cli("validate", path, env=faults_env)

    assert done.returncode == 2
    assert done.stderr == (
        "node 'a': params: function: must be 'package.module:name' (a dotted module path, a"
        " colon, a dotted attribute path of ASCII identifiers; no name may start with '__'),"
        " got 'faults:deep\\n'\n"
    )


@pytest.mark.timeout(90)
def test_a_daemon_outlives_functions_that_misbehave(
    daemons: Daemons, faults_env: dict[str, str]
) -> None:
    """Through a real daemon's inbox, a self-holding return value, an unreadable exception
    and a ``CancelledError`` fail their nodes; the run ends with its result, the daemon
    goes on to the next workflow and logs no traceback."""
    daemon = daemons.start(**faults_env)
    doc = {
        "name": "faults",
        "nodes": [
            node("loop", "faults:holds_itself"),
            node("unreadable", "faults:unreadable"),
            node("cancelled", "faults:async_cancelled"),
        ],
    }

    drop(daemons.inbox, "faults.json", doc)
    first = wait_result(daemons.outbox, "faults", timeout=20)
    drop(
        daemons.inbox,
        "next.json",
        {"name": "next", "nodes": [node("g", "faults:GREETER.hello", who="me")]},
    )
    second = wait_result(daemons.outbox, "next", timeout=20)

    assert first["status"] == "FAILED"
    assert {key: entry["status"] for key, entry in first["nodes"].items()} == {
        "loop": "FAILED",
        "unreadable": "FAILED",
        "cancelled": "FAILED",
    }
    assert second["nodes"]["g"]["output"] == "hello me"
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output()
