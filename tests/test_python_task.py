"""Tests for the ``python`` task, as a user drives it: ``wfe-daemon execute`` and a real
daemon's inbox, calling functions of a small package written into a folder put on the
subprocess's ``PYTHONPATH``."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, cli, drop, wait_result, wait_running, wait_until
from wfe_daemon.core.importpath import allowed

Cli = Callable[..., subprocess.CompletedProcess[str]]
Writer = Callable[..., Path]

JOBS = '''
"""Functions the tests' workflows call."""
import asyncio
import os
import time

CONSTANT = 7


def add(a, b):
    return {"sum": a + b}


async def double(x):
    await asyncio.sleep(0)
    return {"value": 2 * x}


def later(value):
    """A plain function returning an awaitable: the awaitable's result is the output."""
    return asyncio.sleep(0, result={"later": value})


class Calc:
    @staticmethod
    def scale(value, factor=10):
        return value * factor


def boom(row):
    raise ValueError(f"bad row {row}")


def leave():
    raise SystemExit(3)


def a_set():
    return {1, 2}


def nap(seconds):
    time.sleep(seconds)
    return seconds


async def async_nap(seconds):
    await asyncio.sleep(seconds)
    return seconds


async def async_forever(marker):
    try:
        await asyncio.sleep(3600)
    finally:
        with open(marker, "w") as file:
            file.write("cancelled")


def spin(counter, marker):
    """A pure-Python busy loop; it writes how far it got now and then, and how it ended."""
    count = 0
    try:
        while True:
            count += 1
            if count % 20000 == 0:
                with open(f"{counter}.tmp", "w") as file:
                    file.write(str(count))
                os.replace(f"{counter}.tmp", counter)
    except BaseException as exc:
        with open(marker, "w") as file:
            file.write(type(exc).__name__)
        raise
'''

SUB = """
def triple(x):
    return 3 * x
"""


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    """A folder holding the package ``jobs`` (with ``jobs.sub``), ``jobs2`` and ``broken``."""
    root = tmp_path / "pymods"
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "__init__.py").write_text(textwrap.dedent(JOBS))
    (root / "jobs" / "sub.py").write_text(textwrap.dedent(SUB))
    (root / "jobs2.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    return root


@pytest.fixture
def py_env(modules: Path) -> dict[str, str]:
    """The environment that enables the python task and finds the test's modules."""
    return {"PYTHONPATH": str(modules), "WFE_ENABLE_PYTHON": "1"}


def node(node_id: str, function: str, kwargs: dict[str, Any] | None = None, **extra: Any) -> Any:
    """A ``python`` node calling ``function`` with ``kwargs``."""
    params: dict[str, Any] = {"function": function}
    if kwargs is not None:
        params["kwargs"] = kwargs
    return {"id": node_id, "type": "python", "params": params, **extra}


def execute(run_cli: Cli, write_workflow: Writer, env: dict[str, str], *nodes: Any) -> Any:
    """Run a workflow of ``nodes`` through ``wfe-daemon execute``; (exit code, summary, stderr)."""
    path = write_workflow({"name": "py", "nodes": list(nodes)})
    done = run_cli("execute", path, env=env)
    return done.returncode, json.loads(done.stdout), done.stderr


def test_sync_and_async_functions_chain_through_references(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """Plain and async functions run, take kwargs from earlier outputs with their JSON
    types, and a dotted attribute path or a returned awaitable works too."""
    code, summary, stderr = execute(
        run_cli,
        write_workflow,
        py_env,
        node("add", "jobs:add", {"a": 1, "b": 2}),
        node("double", "jobs:double", {"x": "{{ add.sum }}"}, depends_on=["add"]),
        node("scale", "jobs:Calc.scale", {"value": "{{ double.value }}"}, depends_on=["double"]),
        node("later", "jobs:later", {"value": "n={{ scale }}"}, depends_on=["scale"]),
        node("sub", "jobs.sub:triple", {"x": 5}),
        node("defaults", "jobs:Calc.scale", {"value": 1, "factor": 2}),
    )

    assert code == 0, stderr
    outputs = {key: entry["output"] for key, entry in summary["nodes"].items()}
    assert outputs == {
        "add": {"sum": 3},
        "double": {"value": 6},
        "scale": 60,
        "later": {"later": "n=60"},
        "sub": 15,
        "defaults": 2,
    }


def test_an_exception_fails_with_type_and_message_and_its_traceback_is_logged(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """An exception is a failed attempt (retried by ``retries``) reading ``Type: message``;
    the summary holds no traceback, the debug log does; SystemExit fails only the node."""
    code, summary, stderr = execute(
        run_cli,
        write_workflow,
        {**py_env, "WFE_LOG_LEVEL": "DEBUG"},
        node("boom", "jobs:boom", {"row": 3}, retries=1, retry_delay=0.01),
        node("leave", "jobs:leave"),
        node("fine", "jobs:add", {"a": "x", "b": "y"}),
    )

    assert code == 1
    nodes = summary["nodes"]
    assert (nodes["boom"]["status"], nodes["boom"]["attempts"]) == ("FAILED", 2)
    assert nodes["boom"]["error"] == "ValueError: bad row 3"
    assert nodes["leave"]["error"] == "SystemExit: 3"
    assert nodes["fine"]["output"] == {"sum": "xy"}
    assert "Traceback" not in json.dumps(summary)
    logged = [json.loads(line) for line in stderr.splitlines() if "python.traceback" in line]
    boom = [event for event in logged if event["function"] == "jobs:boom"]
    assert len(boom) == 2
    assert boom[0]["level"] == "debug"
    assert 'raise ValueError(f"bad row {row}")' in boom[0]["traceback"]
    assert "jobs/__init__.py" in boom[0]["traceback"]


def test_a_return_value_json_cannot_carry_fails_the_node(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """A function returning a set fails its node, the error naming the bad value."""
    code, summary, _ = execute(run_cli, write_workflow, py_env, node("s", "jobs:a_set"))

    assert code == 1
    assert summary["nodes"]["s"]["status"] == "FAILED"
    assert summary["nodes"]["s"]["error"] == "output: set is not a JSON value"


def test_disabled_the_workflow_is_rejected_naming_enable_python(
    run_cli: Cli, write_workflow: Writer, modules: Path
) -> None:
    """Without enable_python, validate and execute reject the workflow, naming the setting."""
    path = write_workflow({"name": "py", "nodes": [node("a", "jobs:add", {"a": 1, "b": 2})]})
    env = {"PYTHONPATH": str(modules)}

    checked = run_cli("validate", path, env=env)
    done = run_cli("execute", path, env=env)

    assert checked.returncode == 2
    assert "node 'a': python is disabled: set enable_python = true" in checked.stderr
    assert done.returncode == 2
    summary = json.loads(done.stdout)
    assert summary["status"] == "REJECTED"
    assert any("enable_python" in error for error in summary["errors"])


def test_the_allowlist_rejects_literal_functions_outside_it_and_allows_the_rest(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """``python_modules = jobs`` allows jobs and jobs.sub by whole components; ``jobs2``
    is rejected when validated, naming the setting."""
    env = {**py_env, "WFE_PYTHON_MODULES": "jobs"}
    allowed = write_workflow(
        {
            "name": "ok",
            "nodes": [
                node("a", "jobs:add", {"a": 1, "b": 1}),
                node("b", "jobs.sub:triple", {"x": 1}),
            ],
        }
    )
    refused = write_workflow({"name": "no", "nodes": [node("c", "jobs2:add", {"a": 1, "b": 1})]})

    ran = run_cli("execute", allowed, env=env)
    rejected = run_cli("validate", refused, env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert rejected.returncode == 2
    assert "function: module 'jobs2' is outside python_modules (jobs)" in rejected.stderr


def test_the_allowlist_fails_a_referenced_function_or_a_path_into_another_module(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """A function that comes from a reference is judged when its node starts, and an
    attribute path into a module outside the list (``jobs:os.getcwd``) fails too."""
    code, summary, stderr = execute(
        run_cli,
        write_workflow,
        {**py_env, "WFE_PYTHON_MODULES": "jobs, tools.etl"},
        {"id": "pick", "type": "echo", "params": {"fn": "jobs2:add"}},
        node("call", "{{ pick.fn }}", {"a": 1, "b": 2}, depends_on=["pick"]),
        node("escape", "jobs:os.getcwd"),
    )

    assert code == 1, stderr
    nodes = summary["nodes"]
    assert nodes["call"]["status"] == "FAILED"
    assert "module 'jobs2' is outside python_modules (jobs, tools.etl)" in nodes["call"]["error"]
    assert nodes["escape"]["error"] == (
        "jobs:os.getcwd: module 'os' is outside python_modules (jobs, tools.etl)"
    )


def test_a_bad_python_modules_value_stops_the_command(run_cli: Cli, write_workflow: Writer) -> None:
    """A python_modules entry that is not a dotted module name is a one-line config error."""
    path = write_workflow({"name": "py", "nodes": [{"id": "a", "type": "echo"}]})

    done = run_cli("validate", path, env={"WFE_PYTHON_MODULES": "jobs,my-pkg"})

    assert done.returncode == 2
    assert done.stderr.strip() == (
        "wfe-daemon: config: WFE_PYTHON_MODULES: must be dotted module names like mypkg.jobs,"
        " got 'my-pkg'"
    )


@pytest.mark.parametrize("function", ["jobs.add", "jobs:", ":add", "jobs:add()", "jobs:__init__"])
def test_a_malformed_function_is_rejected_when_validated(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str], function: str
) -> None:
    """A ``function`` that is not ``package.module:name`` is a params error naming the form."""
    path = write_workflow({"name": "py", "nodes": [node("a", function)]})

    done = run_cli("validate", path, env=py_env)

    assert done.returncode == 2
    assert done.stderr.startswith("node 'a': params: function: must be 'package.module:name'")
    assert done.stderr.endswith(f", got {function!r}\n")
    assert "Traceback" not in done.stderr


def test_a_missing_module_or_attribute_fails_the_node_clearly(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """A module that is not there or fails to import, a missing attribute and one that
    is not callable each fail their node with a message naming the function."""
    code, summary, _ = execute(
        run_cli,
        write_workflow,
        py_env,
        node("nomod", "nosuchmodule:run"),
        node("noattr", "jobs:nothing"),
        node("deep", "jobs:Calc.nothing"),
        node("value", "jobs:CONSTANT"),
        node("broken", "broken:run"),
    )

    assert code == 1
    errors = {key: entry["error"] for key, entry in summary["nodes"].items()}
    assert errors == {
        "nomod": "nosuchmodule:run: cannot import 'nosuchmodule': No module named 'nosuchmodule'",
        "noattr": "jobs:nothing: jobs has no attribute 'nothing'",
        "deep": "jobs:Calc.nothing: jobs.Calc has no attribute 'nothing'",
        "value": "jobs:CONSTANT: not callable (it is a int)",
        "broken": "broken:run: importing 'broken' failed: RuntimeError: half-written module",
    }


def test_an_async_function_is_cancelled_at_its_timeout(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str], tmp_path: Path
) -> None:
    """An async function past the node's timeout is cancelled (its ``finally`` runs) and
    the node fails as timed out."""
    marker = tmp_path / "async.marker"
    code, summary, _ = execute(
        run_cli,
        write_workflow,
        py_env,
        node("wait", "jobs:async_forever", {"marker": str(marker)}, timeout=0.3),
    )

    assert code == 1
    assert summary["nodes"]["wait"]["error"] == "timed out after 0.3s"
    assert marker.read_text() == "cancelled"


def test_plain_and_async_functions_run_at_once_without_blocking_the_loop(
    run_cli: Cli, write_workflow: Writer, py_env: dict[str, str]
) -> None:
    """Two plain ``time.sleep`` functions and an async one run side by side: each node's
    recorded run overlaps the other two."""
    code, summary, stderr = execute(
        run_cli,
        write_workflow,
        py_env,
        node("s1", "jobs:nap", {"seconds": 0.5}),
        node("s2", "jobs:nap", {"seconds": 0.5}),
        node("a1", "jobs:async_nap", {"seconds": 0.5}),
    )

    assert code == 0, stderr
    spans = {
        key: (
            datetime.fromisoformat(entry["started_at"]),
            datetime.fromisoformat(entry["finished_at"]),
        )
        for key, entry in summary["nodes"].items()
    }
    for key, (start, _) in spans.items():
        for other, (_, end) in spans.items():
            assert start < end, f"{key} started after {other} had finished"


@pytest.mark.timeout(90)
def test_a_daemon_stops_a_timed_out_busy_loop_and_warns_of_a_blocked_call(
    daemons: Daemons, modules: Path, tmp_path: Path
) -> None:
    """Through a real daemon's inbox: a pure-Python busy loop past its timeout is stopped
    in its thread (its counter stops growing, it saw ``Stopped``); a call blocked in C
    past its timeout ends the node anyway, with a ``python.left_running`` warning; a
    module missing at one run is found at the next once written."""
    counter, marker = tmp_path / "spin.count", tmp_path / "spin.marker"
    daemon = daemons.start(PYTHONPATH=str(modules), WFE_ENABLE_PYTHON="1")
    doc = {
        "name": "spin",
        "nodes": [
            node(
                "spin", "jobs:spin", {"counter": str(counter), "marker": str(marker)}, timeout=0.5
            ),
            node("nap", "jobs:nap", {"seconds": 4}, timeout=0.3),
        ],
    }

    drop(daemons.inbox, "spin.json", doc)
    result = wait_result(daemons.outbox, "spin", timeout=20)

    nodes = result["nodes"]
    assert (nodes["spin"]["status"], nodes["spin"]["error"]) == ("FAILED", "timed out after 0.5s")
    assert (nodes["nap"]["status"], nodes["nap"]["error"]) == ("FAILED", "timed out after 0.3s")
    assert marker.read_text() == "Stopped"  # written as the loop ended, before the result
    reached = counter.read_text()
    late = {"name": "late", "nodes": [node("hi", "latejobs:hello", {"who": "you"})]}
    drop(daemons.inbox, "late1.json", late)
    assert wait_result(daemons.outbox, "late1")["nodes"]["hi"]["error"] == (
        "latejobs:hello: cannot import 'latejobs': No module named 'latejobs'"
    )
    (modules / "latejobs.py").write_text("def hello(who):\n    return f'hello {who}'\n")
    drop(daemons.inbox, "late2.json", late)  # the module is found now, without a restart
    assert wait_result(daemons.outbox, "late2")["nodes"]["hi"]["output"] == "hello you"
    assert int(reached) > 0
    assert counter.read_text() == reached  # the loop no longer runs
    warned = wait_until(lambda: daemon.events("python.left_running"), 5, "the warning")
    assert [(event["function"], event["level"]) for event in warned] == [("jobs:nap", "warning")]
    assert not daemon.events("python.traceback")  # debug lines are below the INFO level
    assert daemon.proc.poll() is None


@pytest.mark.timeout(90)
def test_a_cancel_stops_a_busy_loop_and_shutdown_leaves_no_wait_on_a_blocked_call(
    daemons: Daemons, modules: Path, tmp_path: Path
) -> None:
    """``wfe-daemon cancel`` of a run whose plain function loops stops the loop in its
    thread; SIGTERM while a function sleeps in C ends the daemon all the same, exit 0."""
    counter, marker = tmp_path / "spin.count", tmp_path / "spin.marker"
    daemon = daemons.start(PYTHONPATH=str(modules), WFE_ENABLE_PYTHON="1", WFE_SHUTDOWN_GRACE="0.2")
    spin = node("spin", "jobs:spin", {"counter": str(counter), "marker": str(marker)})

    drop(daemons.inbox, "spin.json", {"name": "spin", "nodes": [spin]})
    run_id = wait_running(daemons.db_path, "spin")
    cancelled = cli(daemons, "cancel", str(run_id))
    result = wait_result(daemons.outbox, "spin", timeout=20)

    assert cancelled.returncode == 0, cancelled.stderr
    assert (result["status"], result["nodes"]["spin"]["status"]) == ("CANCELLED", "CANCELLED")
    assert marker.read_text() == "Stopped"

    drop(
        daemons.inbox,
        "nap.json",
        {"name": "nap", "nodes": [node("nap", "jobs:nap", {"seconds": 60})]},
    )
    wait_running(daemons.db_path, "nap")

    assert daemon.terminate() == 0


@pytest.mark.parametrize(
    ("module", "prefixes", "expected"),
    [
        ("mypkg", ("mypkg",), True),
        ("mypkg.jobs.daily", ("mypkg",), True),
        ("mypkg2", ("mypkg",), False),
        ("mypkg", ("mypkg.jobs",), False),
        ("other.jobs", ("mypkg", "other.jobs"), True),
        ("anything", (), True),
    ],
)
def test_a_prefix_matches_whole_dotted_components(
    module: str, prefixes: tuple[str, ...], expected: bool
) -> None:
    """``python_modules`` prefixes match whole components: ``mypkg`` is not ``mypkg2``."""
    assert allowed(module, prefixes) is expected
