"""Tests for the command line, run as a user runs it: ``python -m wfe_daemon`` in a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI_TIMEOUT_S
from wfe_daemon.tasks.basic import EchoTask, SleepTask

Cli = Callable[..., subprocess.CompletedProcess[str]]
Rows = Callable[..., list[dict[str, Any]]]
Writer = Callable[..., Path]


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The result summary ``execute`` printed on stdout (stdout holds nothing else)."""
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def assert_clean_stderr(result: subprocess.CompletedProcess[str]) -> None:
    """No traceback reached the user."""
    assert "Traceback" not in result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command exited ``code`` with exactly one line on stderr; return that line."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


# -- execute ------------------------------------------------------------------------------------


def test_execute_prints_the_summary_on_stdout_and_json_logs_on_stderr(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """A successful run exits 0, prints only the summary on stdout and logs JSON lines on stderr."""
    path = write_workflow(
        {
            "name": "hello",
            "nodes": [
                {"id": "a", "type": "echo", "params": {"greeting": "hi"}},
                {
                    "id": "b",
                    "type": "echo",
                    "depends_on": ["a"],
                    "params": {"said": "{{ a.greeting }}"},
                },
            ],
        },
        "hello.json",
    )

    result = run_cli("execute", path)

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["status"], summary["workflow"], summary["source"]) == (
        "SUCCESS",
        "hello",
        "hello.json",
    )
    assert summary["errors"] == []
    assert summary["nodes"]["b"]["output"] == {"said": "hi"}
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    events = [entry["event"] for entry in logs]
    for event in (
        "workflow.received",
        "workflow.started",
        "node.started",
        "node.finished",
        "workflow.finished",
    ):
        assert event in events
    started = next(entry for entry in logs if entry["event"] == "node.started")
    assert started["node_id"] in ("a", "b")
    assert started["run_id"] == summary["run_id"]
    assert all({"timestamp", "level", "event"} <= entry.keys() for entry in logs)


def test_execute_logs_come_before_the_summary_on_one_stream(
    tmp_path: Path, cli_env: dict[str, str], write_workflow: Writer
) -> None:
    """With stdout and stderr on one pipe (``2>&1``), every log line comes before the summary,
    even when the loop ends before the log lines' flush was due."""
    path = write_workflow({"name": "hello", "nodes": [{"id": "a", "type": "echo"}]})
    late_flush = (
        "import sys, wfe_daemon.logs as logs; logs.FLUSH_AFTER_S = 60.0; "
        "from wfe_daemon.cli.commands import main; sys.exit(main())"
    )

    result = subprocess.run(
        [sys.executable, "-c", late_flush, "execute", str(path)],
        cwd=tmp_path,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 0, result.stdout
    logs, summary = result.stdout.split("{\n", 1)
    assert json.loads("{\n" + summary)["status"] == "SUCCESS"
    assert json.loads(logs.splitlines()[-1])["event"] == "workflow.finished"


def test_execute_whose_stderr_reader_left_still_prints_the_summary(
    tmp_path: Path, cli_env: dict[str, str], write_workflow: Writer
) -> None:
    """A stderr whose reader went away before the first log line costs the logs, not the
    summary on stdout."""
    path = write_workflow({"name": "hello", "nodes": [{"id": "a", "type": "echo"}]})
    with subprocess.Popen(
        [sys.executable, "-m", "wfe_daemon", "execute", str(path)],
        cwd=tmp_path,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        proc.stderr.close()
        out, _ = proc.communicate(timeout=CLI_TIMEOUT_S)

    assert json.loads(out)["status"] == "SUCCESS"


def test_failed_node_gives_partial_success_and_exit_1(run_cli: Cli, write_workflow: Writer) -> None:
    """A timed-out node fails, its dependents are SKIPPED, the other branch succeeds: exit 1."""
    path = write_workflow(
        {
            "name": "partial",
            "nodes": [
                {"id": "slow", "type": "sleep", "params": {"seconds": 5}, "timeout": 0.2},
                {"id": "next", "type": "echo", "depends_on": ["slow"]},
                {"id": "last", "type": "echo", "depends_on": ["next"]},
                {"id": "other", "type": "sleep", "params": {"seconds": 0.1}},
            ],
        }
    )

    result = run_cli("execute", path)

    assert result.returncode == 1, result.stderr
    assert_clean_stderr(result)
    summary = summary_of(result)
    nodes = summary["nodes"]
    assert summary["status"] == "PARTIAL_SUCCESS"
    assert nodes["slow"]["status"] == "FAILED"
    assert nodes["slow"]["error"] == "timed out after 0.2s"
    assert nodes["next"] == {
        "type": "echo",
        "status": "SKIPPED",
        "reason": "dependency failed: slow",
    }
    assert nodes["last"]["reason"] == "dependency failed: slow"
    assert nodes["other"]["status"] == "SUCCESS"
    assert [n for n, e in nodes.items() if e["status"] == "FAILED"] == ["slow"]


def test_run_where_every_node_fails_exits_1(run_cli: Cli, write_workflow: Writer) -> None:
    """A FAILED run exits 1 too."""
    path = write_workflow(
        {
            "name": "f",
            "nodes": [
                {"id": "slow", "type": "sleep", "params": {"seconds": 5}, "timeout": 0.1},
            ],
        }
    )

    result = run_cli("execute", path)

    assert result.returncode == 1
    assert summary_of(result)["status"] == "FAILED"


def test_workflow_timeout_through_the_cli(run_cli: Cli, write_workflow: Writer) -> None:
    """A workflow-level timeout fails the running node as cancelled and skips what follows."""
    path = write_workflow(
        {
            "name": "deadline",
            "timeout": 0.3,
            "nodes": [
                {"id": "long", "type": "sleep", "params": {"seconds": 5}},
                {"id": "after", "type": "echo", "depends_on": ["long"]},
            ],
        }
    )

    result = run_cli("execute", path)

    assert result.returncode == 1
    nodes = summary_of(result)["nodes"]
    assert nodes["long"]["status"] == "FAILED"
    assert nodes["long"]["error"].startswith("cancelled: workflow timed out after 0.3s")
    assert nodes["after"]["status"] == "SKIPPED"


# -- rejection ----------------------------------------------------------------------------------


def _doc(*nodes: dict[str, Any]) -> bytes:
    return json.dumps({"name": "bad", "nodes": list(nodes)}).encode()


_ECHO_A = {"id": "a", "type": "echo"}

# name -> (file bytes, one expected fragment per problem)
REJECTED: dict[str, tuple[bytes, list[str]]] = {
    "malformed_json": (b'{"name": "bad", "nodes": [}', ["invalid JSON"]),
    "cycle": (
        _doc(
            {"id": "a", "type": "echo", "depends_on": ["b"]},
            {"id": "b", "type": "echo", "depends_on": ["a"]},
        ),
        ["cycle: "],
    ),
    "unknown_type": (_doc({"id": "a", "type": "teleport"}), ["unknown type 'teleport'"]),
    "unknown_dependency": (
        _doc({"id": "a", "type": "echo", "depends_on": ["ghost"]}),
        ["depends_on names unknown node 'ghost'"],
    ),
    "bad_params": (_doc({"id": "a", "type": "sleep", "params": {"seconds": "soon"}}), ["params: "]),
    "non_ancestor_reference": (
        _doc(_ECHO_A, {"id": "b", "type": "echo", "params": {"x": "{{ a.y }}"}}),
        ["not an ancestor"],
    ),
    "duplicate_id": (_doc(_ECHO_A, _ECHO_A), ["duplicate id"]),
    "empty_nodes": (b'{"name": "bad", "nodes": []}', ["nodes: must be a non-empty list"]),
    "missing_name": (b'{"nodes": [{"id": "a", "type": "echo"}]}', ["name: required"]),
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, ["nesting deeper than 100"]),
    "utf16": (json.dumps({"name": "u", "nodes": [_ECHO_A]}).encode("utf-16"), ["UTF-16"]),
    "duplicate_key": (
        b'{"name": "a", "name": "b", "nodes": [{"id": "a", "type": "echo"}]}',
        ["duplicate key"],
    ),
    "nan": (
        b'{"name": "n", "nodes": [{"id": "a", "type": "echo", "params": {"x": NaN}}]}',
        ["NaN"],
    ),
    "lone_surrogate": (
        b'{"name": "\\ud800", "nodes": [{"id": "a", "type": "echo"}]}',
        ["surrogate"],
    ),
    "three_problems": (
        _doc(
            {"id": "a", "type": "teleport"},
            {"id": "b", "type": "echo", "depends_on": ["ghost"]},
            {"id": "b", "type": "echo"},
        ),
        ["unknown type 'teleport'", "unknown node 'ghost'", "duplicate id"],
    ),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_file_lists_every_problem_and_runs_nothing(
    run_cli: Cli, write_workflow: Writer, sql: Rows, case: str
) -> None:
    """execute and validate exit 2 listing every problem; the run is recorded, no node ran."""
    data, fragments = REJECTED[case]
    path = write_workflow(data, f"{case}.json")

    executed = run_cli("execute", path)
    validated = run_cli("validate", path)

    assert executed.returncode == 2, executed.stderr
    assert_clean_stderr(executed)
    summary = summary_of(executed)
    assert summary["status"] == "REJECTED"
    assert summary["nodes"] == {}
    assert len(summary["errors"]) == len(fragments), summary["errors"]
    for fragment in fragments:
        assert any(fragment in error for error in summary["errors"]), (fragment, summary["errors"])
    run = sql("SELECT * FROM workflowrun WHERE id = ?", summary["run_id"])
    assert len(run) == 1
    assert run[0]["status"] == "REJECTED"
    assert json.loads(run[0]["result_summary"]) == summary
    assert sql("SELECT * FROM noderun") == []

    assert validated.returncode == 2
    assert_clean_stderr(validated)
    assert validated.stdout == ""
    assert validated.stderr.splitlines() == summary["errors"]


def test_a_bad_secret_param_is_named_but_its_value_shown_nowhere(
    run_cli: Cli, write_workflow: Writer, db_path: Path
) -> None:
    """A secret-named param that fails its schema, in the file or once resolved: the
    problem names the param and the rule, and the value reaches no output, log or row."""
    rejected = write_workflow(
        {
            "name": "w",
            "nodes": [
                {
                    "id": "get",
                    "type": "http_get",
                    "params": {
                        "url": "http://127.0.0.1:9/",
                        "headers": {"Authorization": ["Bearer v4lue-a"]},
                    },
                }
            ],
        }
    )
    bad_url = write_workflow(
        {
            "name": "w",
            "nodes": [
                {
                    "id": "get",
                    "type": "http_get",
                    "params": {"url": "ftp://me:v4lue-c@h/?api_key=v4lue-d"},
                }
            ],
        }
    )
    resolved = write_workflow(
        {
            "name": "w",
            "nodes": [
                {"id": "creds", "type": "echo", "params": {"token": ["Bearer v4lue-b"]}},
                {
                    "id": "get",
                    "type": "http_get",
                    "depends_on": ["creds"],
                    "params": {
                        "url": "http://127.0.0.1:9/",
                        "headers": {"Authorization": "{{ creds.token }}"},
                    },
                },
            ],
        }
    )

    first = run_cli("execute", rejected)
    validated = run_cli("validate", rejected)
    second = run_cli("execute", resolved)
    third = run_cli("execute", bad_url)

    assert summary_of(first)["status"] == "REJECTED"
    assert summary_of(first)["errors"] == [
        "node 'get': params: headers.Authorization: is not of type 'string'"
        " (a secret: its value is not shown)"
    ]
    assert validated.stderr.splitlines() == summary_of(first)["errors"]
    node = summary_of(second)["nodes"]["get"]
    assert node["status"] == "FAILED"
    assert node["error"] == (
        "params: headers.Authorization: is not of type 'string' (a secret: its value is not shown)"
    )
    assert summary_of(third)["errors"] == [
        "node 'get': params: url: must be an http:// or https:// URL, got 'ftp://***@h/?api_key=***'"
    ]
    everything = [
        first.stdout,
        first.stderr,
        validated.stderr,
        second.stdout,
        second.stderr,
        third.stdout,
        third.stderr,
    ]
    assert not any("v4lue" in text for text in everything)
    connection = sqlite3.connect(db_path)
    try:
        assert "v4lue" not in "\n".join(connection.iterdump())
    finally:
        connection.close()


def test_the_config_file_in_effect_and_its_precedence(tmp_path: Path) -> None:
    """config/wfe.toml when present, else nothing; --config over $WFE_CONFIG over it;
    WFE_* over any file; relative paths resolve against the working directory."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "wfe.toml").write_text('db_path = "state/default.db"\n')
    (tmp_path / "other.toml").write_text('db_path = "state/other.db"\n')
    (tmp_path / "third.toml").write_text('db_path = "state/third.db"\n')
    (tmp_path / "wf.json").write_text(
        json.dumps({"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {}}]})
    )
    base = {key: value for key, value in os.environ.items() if not key.startswith("WFE_")}

    def run(*args: str, **env: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "wfe_daemon", "execute", *args, "wf.json"],
            cwd=tmp_path,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert summary_of(done)["status"] == "SUCCESS"

    def runs_in(name: str) -> int:
        connection = sqlite3.connect(tmp_path / "state" / name)
        try:
            return int(connection.execute("SELECT count(*) FROM workflowrun").fetchone()[0])
        finally:
            connection.close()

    run()
    run("--config", "other.toml")
    run(WFE_CONFIG="third.toml")
    run("--config", "other.toml", WFE_CONFIG="third.toml")
    run("--config", "other.toml", WFE_DB_PATH="state/env.db")

    assert (runs_in("default.db"), runs_in("other.db"), runs_in("third.db")) == (1, 2, 1)
    assert runs_in("env.db") == 1
    assert not (tmp_path / "data" / "workflows.db").exists()  # the built-in default, unused


def test_cycle_is_named_as_a_path(run_cli: Cli, write_workflow: Writer) -> None:
    """The cycle's problem names its path, as in ``cycle: a -> b -> a``."""
    path = write_workflow(REJECTED["cycle"][0])

    result = run_cli("validate", path)

    assert result.stderr.strip() in ("cycle: a -> b -> a", "cycle: b -> a -> b")


def test_validate_names_every_cycle_and_every_other_problem_beside_them(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """Two cycles (one a self-loop) are each named, and the reference and dependency problems
    elsewhere in the file are still reported: all on stderr, exit 2."""
    path = write_workflow(
        _doc(
            {"id": "a", "type": "echo", "depends_on": ["b"]},
            {"id": "b", "type": "echo", "depends_on": ["a"]},
            {"id": "c", "type": "echo", "depends_on": ["c"]},
            {"id": "d", "type": "echo", "params": {"x": "{{ e.out }}"}},
            {"id": "e", "type": "echo", "depends_on": ["ghost"]},
        )
    )

    result = run_cli("validate", path)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "node 'e': depends_on names unknown node 'ghost'",
        "cycle: a -> b -> a",
        "cycle: c -> c",
        "node 'd': reference {{ e.out }} names 'e', which is not an ancestor of 'd'",
    ]


def test_a_reference_inside_a_cycle_is_judged_too(run_cli: Cli, write_workflow: Writer) -> None:
    """A node on a cycle that references a node off it is told so; one on the cycle is not."""
    path = write_workflow(
        _doc(
            {"id": "a", "type": "echo", "depends_on": ["b"], "params": {"x": "{{ b.y }}"}},
            {"id": "b", "type": "echo", "depends_on": ["a"], "params": {"x": "{{ z.y }}"}},
            {"id": "z", "type": "echo"},
        )
    )

    result = run_cli("validate", path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "cycle: a -> b -> a",
        "node 'b': reference {{ z.y }} names 'z', which is not an ancestor of 'b'",
    ]


def test_file_over_max_file_size_is_rejected_with_a_recorded_summary(
    run_cli: Cli, write_workflow: Writer, sql: Rows
) -> None:
    """A file larger than max_file_size is REJECTED by execute like any other bad file."""
    path = write_workflow(
        {"name": "big", "nodes": [{"id": "a", "type": "echo", "params": {"pad": "x" * 500}}]}
    )

    executed = run_cli("execute", path, env={"WFE_MAX_FILE_SIZE": "100"})
    validated = run_cli("validate", path, env={"WFE_MAX_FILE_SIZE": "100"})

    assert executed.returncode == 2, executed.stderr
    summary = summary_of(executed)
    assert summary["status"] == "REJECTED"
    assert len(summary["errors"]) == 1
    assert "max_file_size" in summary["errors"][0]
    assert sql("SELECT status FROM workflowrun WHERE id = ?", summary["run_id"]) == [
        {"status": "REJECTED"}
    ]
    assert validated.returncode == 2
    assert validated.stderr.splitlines() == summary["errors"]


def test_validate_accepts_a_valid_file(run_cli: Cli, write_workflow: Writer, db_path: Path) -> None:
    """validate exits 0 on a valid file, prints nothing and runs nothing."""
    path = write_workflow(
        {
            "name": "ok",
            "nodes": [
                {"id": "a", "type": "sleep", "params": {"seconds": 0}},
                {"id": "b", "type": "echo", "depends_on": ["a"], "params": {"s": "{{ a.slept }}"}},
            ],
        }
    )

    result = run_cli("validate", path)

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not db_path.exists()


# -- tasks --------------------------------------------------------------------------------------


def test_tasks_json_lists_echo_and_sleep_with_their_schemas(run_cli: Cli) -> None:
    """``tasks --json`` describes each type: type, display_name, description, category, schema."""
    result = run_cli("tasks", "--json")

    assert result.returncode == 0, result.stderr
    described = {task["type"]: task for task in json.loads(result.stdout)}
    for task_class in (EchoTask, SleepTask):
        entry = described[task_class.type]
        assert entry["params_schema"] == task_class.params_schema
        assert entry["display_name"] == task_class.display_name
        assert entry["description"] == task_class.description
        assert entry["category"] == task_class.category


def test_tasks_plain_lists_each_type_on_a_line(run_cli: Cli) -> None:
    """Plain ``tasks`` starts a line per type, with its name, category, description, params."""
    result = run_cli("tasks")

    assert result.returncode == 0, result.stderr
    first_words = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert "echo" in first_words
    assert "sleep" in first_words
    lines = result.stdout.splitlines()
    at = lines.index("sleep (Sleep) [basic]")
    assert lines[at + 1] == "  Waits the given number of seconds."
    assert lines[at + 2] == "  params: seconds (number, required)"


# -- runs and show ------------------------------------------------------------------------------


def test_runs_and_show_report_what_execute_recorded(run_cli: Cli, write_workflow: Writer) -> None:
    """``runs`` lists runs newest first; ``show`` gives one run with its nodes."""
    first = summary_of(run_cli("execute", write_workflow({"name": "one", "nodes": [_ECHO_A]})))
    second = summary_of(
        run_cli(
            "execute",
            write_workflow(
                {
                    "name": "two",
                    "nodes": [
                        _ECHO_A,
                        {"id": "b", "type": "sleep", "params": {"seconds": 0}, "depends_on": ["a"]},
                    ],
                }
            ),
        )
    )

    runs = run_cli("runs", "--json")
    plain = run_cli("runs", "--limit", "1")
    shown = run_cli("show", str(second["run_id"]), "--json")
    shown_plain = run_cli("show", str(second["run_id"]))

    assert runs.returncode == plain.returncode == shown.returncode == shown_plain.returncode == 0
    listed = json.loads(runs.stdout)
    assert [run["run_id"] for run in listed] == [second["run_id"], first["run_id"]]
    assert [run["workflow"] for run in listed] == ["two", "one"]
    assert "two" in plain.stdout
    assert "one" not in plain.stdout
    run = json.loads(shown.stdout)
    assert run["status"] == "SUCCESS"
    assert run["result_summary"] == second
    assert [(n["node_id"], n["status"]) for n in run["nodes"]] == [
        ("a", "SUCCESS"),
        ("b", "SUCCESS"),
    ]
    assert "b" in shown_plain.stdout
    assert "SUCCESS" in shown_plain.stdout


def test_show_of_a_rejected_run_prints_every_problem(run_cli: Cli, write_workflow: Writer) -> None:
    """``show`` of a REJECTED run lists each of its problems, not only the first."""
    rejected = summary_of(run_cli("execute", write_workflow(REJECTED["three_problems"][0])))
    assert len(rejected["errors"]) == 3

    shown = run_cli("show", str(rejected["run_id"]))

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("errors"))
    assert [line[len("errors    ") :] for line in lines[start : start + 3]] == rejected["errors"]
    assert lines[start + 1].startswith(" " * len("errors    "))


def test_show_of_a_run_with_one_problem_keeps_the_single_error_line(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """A run with one problem (here a file over max_file_size) shows it on one ``error`` line."""
    path = write_workflow(
        {"name": "big", "nodes": [{"id": "a", "type": "echo", "params": {"pad": "x" * 500}}]}
    )
    rejected = summary_of(run_cli("execute", path, env={"WFE_MAX_FILE_SIZE": "100"}))

    shown = run_cli("show", str(rejected["run_id"]))

    assert f"error     {rejected['errors'][0]}" in shown.stdout.splitlines()
    assert "errors" not in shown.stdout


def test_show_of_an_unknown_run_exits_1_with_one_line(run_cli: Cli) -> None:
    """``show 999`` on an empty database exits 1 with a one-line message."""
    line = assert_one_line_error(run_cli("show", "999"), 1)

    assert "999" in line


# -- usage errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["frobnicate"], {}, "frobnicate"),
        ([], {}, "required"),
        (["execute"], {}, "file"),
        (["validate"], {}, "file"),
        (["execute", "missing.json"], {}, "missing.json"),
        (["show", "abc"], {}, "abc"),
        (["show", "0"], {}, "RUN_ID"),
        (["runs", "--limit", "0"], {}, "--limit"),
        (["runs", "--limit", "many"], {}, "--limit"),
        (["runs", "--frobnicate"], {}, "--frobnicate"),
        (["runs"], {"WFE_MAX_CONCURRENT_TASKS": "-3"}, "WFE_MAX_CONCURRENT_TASKS"),
        (
            ["execute", "missing.json"],
            {"WFE_MAX_CONCURRENT_TASKS": "-3"},
            "WFE_MAX_CONCURRENT_TASKS",
        ),
        (["tasks"], {"WFE_MAX_CONCURRENT_TASKS": "-3"}, "WFE_MAX_CONCURRENT_TASKS"),
        (["runs"], {"WFE_LOG_LEVEL": "LOUD"}, "WFE_LOG_LEVEL"),
        (["runs", "--config", "nowhere.toml"], {}, "nowhere.toml"),
        (["tasks", "--config", "nowhere.toml"], {}, "nowhere.toml"),
        (["runs", "--status", "bogus"], {}, "bogus"),
        (["runs", "--status"], {}, "--status"),
        (["runs", "--since", "yesterday"], {}, "yesterday"),
        (["runs", "--since", "2024-13-45"], {}, "--since"),
        (["graph"], {}, "FILE|RUN_ID"),
        (["graph", "missing.json"], {}, "missing.json"),
        (["graph", "1", "--format", "png"], {}, "png"),
        (["cancel", "abc"], {}, "abc"),
        (["cancel"], {}, "RUN_ID"),
        (["retry", "x1"], {}, "x1"),
        (["retry", "-4"], {}, "RUN_ID"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_usage_and_config_errors_exit_2_with_one_line(
    run_cli: Cli, args: list[str], env: dict[str, str], fragment: str
) -> None:
    """A usage or configuration error exits 2 with one line naming the culprit, no traceback."""
    line = assert_one_line_error(run_cli(*args, env=env), 2)

    assert fragment in line


def test_config_error_names_the_key_and_value(run_cli: Cli) -> None:
    """A negative limit's message names the key and the bad value."""
    line = assert_one_line_error(run_cli("runs", env={"WFE_MAX_CONCURRENT_TASKS": "-3"}), 2)

    assert "max_concurrent_tasks" in line.lower()
    assert "-3" in line


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_are_redacted_in_summary_database_and_logs(
    run_cli: Cli, write_workflow: Writer, sql: Rows, db_path: Path
) -> None:
    """api_key, Authorization and friends show as "***" in the summary, the rows and the logs."""
    path = write_workflow(
        {
            "name": "secret",
            "nodes": [
                {
                    "id": "call",
                    "type": "echo",
                    "params": {
                        "url": "https://example.invalid/",
                        "api_key": "sekrit-api-key",
                        "headers": {"Authorization": "Bearer sekrit-bearer", "X-Trace": "visible"},
                        "auth": [{"password": "sekrit-password", "user": "me"}],
                    },
                },
                {
                    "id": "use",
                    "type": "echo",
                    "depends_on": ["call"],
                    "params": {
                        "Access_Token": "{{ call.api_key }}",
                        "user": "{{ call.auth.0.user }}",
                    },
                },
            ],
        }
    )

    result = run_cli("execute", path)

    assert result.returncode == 0, result.stderr
    assert "sekrit" not in result.stdout
    assert "sekrit" not in result.stderr
    summary = summary_of(result)
    call = summary["nodes"]["call"]["output"]
    assert call["api_key"] == "***"
    assert call["headers"] == {"Authorization": "***", "X-Trace": "visible"}
    assert call["auth"] == [{"password": "***", "user": "me"}]
    assert summary["nodes"]["use"]["output"] == {"Access_Token": "***", "user": "me"}
    rows = sql("SELECT result_data FROM noderun")
    run = sql("SELECT definition, result_summary FROM workflowrun")[0]
    for text in [row["result_data"] for row in rows] + [run["definition"]]:
        assert "sekrit" not in text
        assert "***" in text
    assert "sekrit" not in run["result_summary"]  # which keeps no outputs (they are in the rows)
    assert json.loads(run["definition"])["nodes"][0]["params"]["api_key"] == "***"
    for file in db_path.parent.glob(db_path.name + "*"):
        assert b"sekrit" not in file.read_bytes()


# -- readable history ---------------------------------------------------------------------------

_DIAMOND = {
    "name": "diamond",
    "nodes": [
        {"id": "a", "type": "echo"},
        {"id": "b", "type": "sleep", "params": {"seconds": 0}, "depends_on": ["a"]},
        {"id": "c", "type": "sleep", "params": {"seconds": 5}, "timeout": 0.1, "depends_on": ["a"]},
        {"id": "d", "type": "echo", "depends_on": ["b", "c"]},
    ],
}
_SUCCEEDS = {"name": "fine", "nodes": [_ECHO_A]}


def _executed(run_cli: Cli, write_workflow: Writer, doc: dict[str, Any] | bytes) -> int:
    """Execute ``doc``; the id of the run it recorded."""
    run_id: int = summary_of(run_cli("execute", write_workflow(doc)))["run_id"]
    return run_id


def test_runs_and_show_print_plain_tables_when_piped(run_cli: Cli, write_workflow: Writer) -> None:
    """Piped, ``runs`` and ``show`` print aligned columns without colour, errors uncut."""
    ok = _executed(run_cli, write_workflow, _SUCCEEDS)
    partial = _executed(run_cli, write_workflow, _DIAMOND)

    runs = run_cli("runs", env={"COLUMNS": "30"})
    shown = run_cli("show", str(partial))

    assert runs.returncode == shown.returncode == 0, runs.stderr + shown.stderr
    assert "\x1b" not in runs.stdout + shown.stdout
    header, *rows = runs.stdout.splitlines()
    assert header.split() == ["RUN", "STATUS", "STARTED", "DURATION", "WORKFLOW", "ERROR"]
    assert rows[0].split()[:2] == [str(partial), "PARTIAL_SUCCESS"]
    assert rows[0].endswith("diamond   c: timed out after 0.1s")  # not cut to COLUMNS
    assert rows[1].split()[:2] == [str(ok), "SUCCESS"]
    assert rows[1].split()[-1] == "fine"
    lines = shown.stdout.splitlines()
    assert lines[0] == f"run {partial}  diamond  PARTIAL_SUCCESS"
    assert "error     c: timed out after 0.1s" in lines
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["NODE", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR/REASON"]
    assert [row.split()[:4] for row in table[1:]] == [
        ["a", "echo", "SUCCESS", "1"],
        ["b", "sleep", "SUCCESS", "1"],
        ["c", "sleep", "FAILED", "1"],
        ["d", "echo", "SKIPPED", "0"],
    ]
    assert table[3].endswith("timed out after 0.1s")
    assert table[4].endswith("-  dependency failed: c")


def test_runs_json_names_fields_as_summaries_do_and_adds_the_error(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """``runs --json`` rows name the run ``run_id`` and ``workflow``, as result summaries do,
    and carry ``error``: the first failure."""
    partial = _executed(run_cli, write_workflow, _DIAMOND)
    rejected = _executed(run_cli, write_workflow, REJECTED["cycle"][0])

    listed = json.loads(run_cli("runs", "--json").stdout)

    assert [run["run_id"] for run in listed] == [rejected, partial]
    assert [run["workflow"] for run in listed] == ["bad", "diamond"]
    assert set(listed[0]) == {
        "run_id",
        "workflow",
        "status",
        "source",
        "started_at",
        "finished_at",
        "duration",
        "error",
    }
    assert listed[0]["error"].startswith("cycle: ")
    assert listed[1]["error"] == "c: timed out after 0.1s"


def test_runs_status_filter(run_cli: Cli, write_workflow: Writer) -> None:
    """``--status`` keeps the runs in any of the given statuses, in any case."""
    ok = _executed(run_cli, write_workflow, _SUCCEEDS)
    partial = _executed(run_cli, write_workflow, _DIAMOND)
    rejected = _executed(run_cli, write_workflow, REJECTED["cycle"][0])

    def ids(*args: str) -> list[int]:
        result = run_cli("runs", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [run["run_id"] for run in json.loads(result.stdout)]

    assert ids("--status", "success") == [ok]
    assert ids("--status", "Partial_Success", "REJECTED") == [rejected, partial]
    assert ids("--status", "rejected", "--status", "success") == [rejected, ok]
    assert ids("--status", "cancelled") == []
    assert ids("--status", "success", "partial_success", "--limit", "1") == [partial]


def test_runs_since_filter(run_cli: Cli, write_workflow: Writer, db_path: Path) -> None:
    """``--since`` takes an age (45m, 2h, 3d) or an ISO date/time and keeps newer runs."""
    old = _executed(run_cli, write_workflow, _SUCCEEDS)
    hours_ago = _executed(run_cli, write_workflow, _SUCCEEDS)
    new = _executed(run_cli, write_workflow, _SUCCEEDS)
    now = datetime.now(UTC)
    with sqlite3.connect(db_path) as conn:
        for run_id, age in ((old, timedelta(days=3)), (hours_ago, timedelta(hours=3))):
            stamp = (now - age).isoformat()
            conn.execute("UPDATE workflowrun SET started_at = ? WHERE id = ?", (stamp, run_id))
    conn.close()

    def ids(since: str) -> list[int]:
        result = run_cli("runs", "--json", "--since", since)
        assert result.returncode == 0, result.stderr
        return [run["run_id"] for run in json.loads(result.stdout)]

    assert ids("45m") == [new]
    assert ids("4h") == [new, hours_ago]
    assert ids("2d") == [new, hours_ago]
    assert ids("4d") == [new, hours_ago, old]
    assert ids((now - timedelta(days=1)).isoformat()) == [new, hours_ago]
    two_days_ago = (now - timedelta(days=2)).astimezone(timezone_of(7))
    assert ids(two_days_ago.isoformat()) == [new, hours_ago]  # any offset, read as UTC
    assert ids((now + timedelta(days=1)).strftime("%Y-%m-%d")) == []


def timezone_of(hours: int) -> Any:
    """A fixed UTC offset of ``hours``."""
    from datetime import timezone

    return timezone(timedelta(hours=hours))


# -- graph --------------------------------------------------------------------------------------

_DIAMOND_MERMAID = """\
flowchart TD
    a["a (echo)"]
    b["b (sleep)"]
    c["c (sleep)"]
    d["d (echo)"]
    a --> b
    a --> c
    b --> d
    c --> d
"""


def test_graph_of_a_file_as_mermaid_and_dot(run_cli: Cli, write_workflow: Writer) -> None:
    """``graph FILE`` prints Mermaid by default and DOT with ``--format dot``, in file order."""
    path = write_workflow(_DIAMOND)

    mermaid = run_cli("graph", path)
    dot = run_cli("graph", path, "--format", "dot")

    assert (mermaid.returncode, mermaid.stderr) == (0, "")
    assert mermaid.stdout == _DIAMOND_MERMAID
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout == "\n".join(
        [
            'digraph "diamond" {',
            "    rankdir=TB;",
            '    node [shape=box, style="rounded"];',
            '    "a" [label="a\\necho"];',
            '    "b" [label="b\\nsleep"];',
            '    "c" [label="c\\nsleep"];',
            '    "d" [label="d\\necho"];',
            '    "a" -> "b";',
            '    "a" -> "c";',
            '    "b" -> "d";',
            '    "c" -> "d";',
            "}",
            "",
        ]
    )


def test_graph_of_a_run_shows_its_statuses(run_cli: Cli, write_workflow: Writer) -> None:
    """``graph RUN_ID`` draws the stored workflow with each node's status."""
    run_id = _executed(run_cli, write_workflow, _DIAMOND)

    result = run_cli("graph", str(run_id))

    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n".join(
        [
            "flowchart TD",
            '    a["a (echo)<br/>SUCCESS"]:::success',
            '    b["b (sleep)<br/>SUCCESS"]:::success',
            '    c["c (sleep)<br/>FAILED"]:::failed',
            '    d["d (echo)<br/>SKIPPED"]:::skipped',
            "    a --> b",
            "    a --> c",
            "    b --> d",
            "    c --> d",
            "    classDef success fill:#d4edda,stroke:#2e7d32,color:#1b5e20",
            "    classDef failed fill:#f8d7da,stroke:#c62828,color:#7f1d1d",
            "    classDef skipped fill:#eeeeee,stroke:#9e9e9e,color:#616161,stroke-dasharray:4 3",
            "",
        ]
    )
    dot = run_cli("graph", str(run_id), "--format", "dot")
    assert '"c" [label="c\\nsleep\\nFAILED", style="rounded,filled"' in dot.stdout


def test_graph_of_a_rejected_file_lists_its_problems(run_cli: Cli, write_workflow: Writer) -> None:
    """A file that fails validation exits 2 with each problem on stderr, like ``validate``."""
    path = write_workflow(REJECTED["three_problems"][0])

    graphed = run_cli("graph", path)
    validated = run_cli("validate", path)

    assert (graphed.returncode, graphed.stdout) == (2, "")
    assert graphed.stderr == validated.stderr
    assert len(graphed.stderr.splitlines()) == 3


def test_graph_of_unknown_or_unrun_runs_exits_1(run_cli: Cli, write_workflow: Writer) -> None:
    """An unknown run, or a rejected run with no workflow to draw, exits 1 with one line."""
    rejected = _executed(run_cli, write_workflow, REJECTED["cycle"][0])

    assert "no run 42" in assert_one_line_error(run_cli("graph", "42"), 1)
    line = assert_one_line_error(run_cli("graph", str(rejected)), 1)
    assert "REJECTED" in line


# -- terminals ----------------------------------------------------------------------------------


def run_on_tty(
    tmp_path: Path, env: dict[str, str], *args: str | Path, stdout_tty: bool, stderr_tty: bool
) -> tuple[int, str, str]:
    """Run the CLI with stdout and/or stderr on a pseudo-terminal; exit code, stdout, stderr.

    Both streams are drained as the child writes them (a pty's buffer is small).
    """
    readers: dict[int, list[bytes]] = {}
    children: list[int] = []
    handles: list[Any] = []
    for wanted in (stdout_tty, stderr_tty):
        if wanted:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            readers[master] = []
            handles.append(slave)
            children.append(slave)
        else:
            read_end, write_end = os.pipe()
            readers[read_end] = []
            handles.append(write_end)
            children.append(write_end)
    process = subprocess.Popen(
        [sys.executable, "-m", "wfe_daemon", *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=handles[0],
        stderr=handles[1],
    )
    for fd in children:
        os.close(fd)
    open_fds = list(readers)
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [], 30)
        assert ready, "the CLI went silent for 30s"
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            if chunk:
                readers[fd].append(chunk)
            else:
                open_fds.remove(fd)
                os.close(fd)
    code = process.wait(timeout=30)
    out, err = (b"".join(chunks).decode() for chunks in readers.values())
    return code, out, err


def test_statuses_are_coloured_on_a_terminal_only(
    run_cli: Cli, write_workflow: Writer, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """On a terminal ``runs`` and ``show`` colour statuses; piped, or with NO_COLOR, they don't."""
    run_id = _executed(run_cli, write_workflow, _DIAMOND)
    green, yellow, grey = "\x1b[32mSUCCESS\x1b[0m", "\x1b[33mPARTIAL_SUCCESS", "\x1b[90mSKIPPED"

    code, runs, _ = run_on_tty(tmp_path, cli_env, "runs", stdout_tty=True, stderr_tty=False)
    shown = run_on_tty(tmp_path, cli_env, "show", str(run_id), stdout_tty=True, stderr_tty=False)
    no_color = run_on_tty(
        tmp_path, {**cli_env, "NO_COLOR": "1"}, "runs", stdout_tty=True, stderr_tty=False
    )

    assert code == 0
    assert yellow in runs
    assert (shown[0], green in shown[1], grey in shown[1]) == (0, True, True)
    assert no_color[0] == 0
    assert "\x1b" not in no_color[1]
    assert "PARTIAL_SUCCESS" in no_color[1]
    assert "\x1b" not in run_cli("runs").stdout + run_cli("show", str(run_id)).stdout


_THREE_STEPS = {
    "name": "steps",
    "nodes": [
        {"id": "one", "type": "sleep", "params": {"seconds": 0.4}},
        {"id": "two", "type": "sleep", "params": {"seconds": 0.4}, "depends_on": ["one"]},
        {"id": "three", "type": "echo", "depends_on": ["two"]},
    ],
}


def test_execute_shows_progress_on_a_terminal_and_clears_it(
    write_workflow: Writer, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """With stderr on a terminal, ``execute`` draws a live line there and erases it at the end."""
    path = write_workflow(_THREE_STEPS)

    code, out, err = run_on_tty(
        tmp_path, cli_env, "execute", path, stdout_tty=False, stderr_tty=True
    )

    assert code == 0, err
    assert json.loads(out)["status"] == "SUCCESS"  # stdout stays the summary alone
    assert "\r\x1b[K0/3 done" in err
    assert "1 running: one" in err
    assert "1/3 done | 1 running: two" in err
    tail = err.rsplit("\r\x1b[K", 1)[-1]
    assert "done" not in tail  # the last thing drawn was erased
    logs = [line for line in err.replace("\r\x1b[K", "\n").splitlines() if line.startswith("{")]
    assert any(json.loads(line)["event"] == "workflow.finished" for line in logs)


def test_execute_adds_nothing_to_stderr_when_piped(run_cli: Cli, write_workflow: Writer) -> None:
    """Piped, ``execute``'s stderr holds only JSON log lines: no progress, no escapes."""
    result = run_cli("execute", write_workflow(_THREE_STEPS))

    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    assert "\x1b" not in result.stderr
    assert all(json.loads(line)["event"] for line in result.stderr.splitlines())


# -- task limits and signals --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["execute", "retry", "validate", "graph", "tasks"])
def test_an_unknown_task_type_in_task_limits_exits_2(
    run_cli: Cli, write_workflow: Writer, tmp_path: Path, command: str
) -> None:
    """A misspelt ``[task_limits]`` key stops every command that loads the task types
    (``execute``, ``retry``, ``validate``, ``graph FILE``, ``tasks``) with one line naming it
    and the known types, before anything runs."""
    config = tmp_path / "wfe.toml"
    config.write_text("[task_limits]\nhtp_get = 8\n")
    target = write_workflow({"name": "w", "nodes": [{"id": "a", "type": "echo"}]})
    args = {"retry": [command, "1"], "tasks": [command]}.get(command, [command, target])

    line = assert_one_line_error(run_cli(*args, "--config", config), 2)

    assert "config: task_limits: unknown task type 'htp_get' (known: " in line
    assert "http_get" in line
    assert "echo" in line


def test_an_idempotency_key_holds_until_its_run_failed(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """A FAILED run frees its key: the next file with it runs. A PARTIAL_SUCCESS run holds
    it: the next file is DUPLICATE, naming that run."""
    timing_out = {"id": "slow", "type": "sleep", "timeout": 0.05, "params": {"seconds": 5}}
    echo = {"id": "ok", "type": "echo", "params": {}}

    def execute(key: str, *nodes: dict[str, Any]) -> dict[str, Any]:
        doc = {"name": key, "idempotency_key": key, "nodes": list(nodes)}
        return summary_of(run_cli("execute", write_workflow(doc)))

    failed = execute("k-failed", timing_out)
    after_failed = execute("k-failed", echo)
    partial = execute("k-partial", echo, timing_out)
    after_partial = execute("k-partial", echo)

    assert failed["status"] == "FAILED"
    assert (after_failed["status"], after_failed["nodes"]["ok"]["status"]) == ("SUCCESS", "SUCCESS")
    assert partial["status"] == "PARTIAL_SUCCESS"
    assert (after_partial["status"], after_partial["duplicate_of"]) == (
        "DUPLICATE",
        partial["run_id"],
    )
    assert after_partial["nodes"] == {}


_LONG_SLEEP = {
    "name": "long",
    "idempotency_key": "nightly",
    "nodes": [{"id": "nap", "type": "sleep", "params": {"seconds": 30}}],
}


def _signal_when_running(
    tmp_path: Path, env: dict[str, str], signum: signal.Signals, *args: str | Path
) -> tuple[int, str, str, float]:
    """Run the CLI, send ``signum`` once a node is RUNNING; ``(code, stdout, stderr, seconds
    from the signal to the exit)``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wfe_daemon", *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _node_running(Path(env["WFE_DB_PATH"])):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no node started"
            time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=10)
        return process.returncode, out, err, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_cancels_the_run_of_execute_and_frees_its_key(
    run_cli: Cli,
    write_workflow: Writer,
    tmp_path: Path,
    cli_env: dict[str, str],
    sql: Rows,
    signum: signal.Signals,
) -> None:
    """SIGTERM or SIGINT during ``execute`` ends its run CANCELLED at once, prints that
    summary and exits 1; a later file with the same idempotency_key runs."""
    code, out, err, elapsed = _signal_when_running(
        tmp_path, cli_env, signum, "execute", write_workflow(_LONG_SLEEP)
    )

    assert code == 1, err
    assert elapsed < 10, f"took {elapsed:.2f}s to stop"  # the 30 s nap was cancelled
    assert "Traceback" not in err
    summary = json.loads(out)
    assert (summary["status"], summary["nodes"]["nap"]["status"]) == ("CANCELLED", "CANCELLED")
    (row,) = sql("SELECT status FROM workflowrun WHERE id = ?", summary["run_id"])
    assert row["status"] == "CANCELLED"

    quick = {**_LONG_SLEEP, "nodes": [{"id": "a", "type": "echo"}]}
    again = run_cli("execute", write_workflow(quick))
    assert again.returncode == 0, again.stderr
    assert summary_of(again)["status"] == "SUCCESS"


def test_sigterm_cancels_the_run_of_retry(
    write_workflow: Writer, tmp_path: Path, cli_env: dict[str, str], sql: Rows
) -> None:
    """SIGTERM during ``retry`` ends the new run CANCELLED, prints it and exits 1."""
    first = _signal_when_running(
        tmp_path, cli_env, signal.SIGTERM, "execute", write_workflow(_LONG_SLEEP)
    )
    original = json.loads(first[1])["run_id"]

    code, out, err, elapsed = _signal_when_running(
        tmp_path, cli_env, signal.SIGTERM, "retry", str(original)
    )

    assert code == 1, err
    assert elapsed < 10, f"took {elapsed:.2f}s to stop"  # the 30 s nap was cancelled
    summary = json.loads(out)
    assert (summary["status"], summary["retry_of"]) == ("CANCELLED", original)
    (row,) = sql("SELECT status FROM workflowrun WHERE id = ?", summary["run_id"])
    assert row["status"] == "CANCELLED"


def _node_running(db_path: Path) -> bool:
    """Whether a node of the database is RUNNING (False while the file is not there yet)."""
    if not db_path.exists():
        return False
    try:
        conn = sqlite3.connect(db_path, timeout=5)
        try:
            return bool(conn.execute("SELECT 1 FROM noderun WHERE status = 'RUNNING'").fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False


@pytest.mark.parametrize("before", [True, False], ids=["before-command", "after-command"])
def test_config_flag_is_honoured_before_or_after_the_command(
    run_cli: Cli, tmp_path: Path, before: bool
) -> None:
    """``--config PATH`` is read wherever it stands: a bad file stops the command with one line."""
    bad = tmp_path / "bad.toml"
    bad.write_text("max_concurrent_tasks = -3\n")
    args = ["--config", bad, "runs"] if before else ["runs", "--config", bad]
    result = run_cli(*args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "max_concurrent_tasks" in line


def test_stdout_stays_unbuffered_under_pythonunbuffered() -> None:
    """With ``PYTHONUNBUFFERED`` set, stdout on whole writes still writes each call at once:
    a line is out even when the process then dies without flushing (as under SIGKILL)."""
    code = (
        "import os, sys\n"
        "from wfe_daemon.cli.streams import use_whole_writes\n"
        "use_whole_writes()\n"
        "sys.stdout.write('a line\\n')\n"
        "os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=True,
    )
    assert done.stdout == "a line\n"
