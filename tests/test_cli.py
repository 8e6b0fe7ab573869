"""Tests for the command line, run as a user runs it: ``python -m wfe_daemon`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


def test_cycle_is_named_as_a_path(run_cli: Cli, write_workflow: Writer) -> None:
    """The cycle's problem names its path, as in ``cycle: a -> b -> a``."""
    path = write_workflow(REJECTED["cycle"][0])

    result = run_cli("validate", path)

    assert result.stderr.strip() in ("cycle: a -> b -> a", "cycle: b -> a -> b")


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
    """Plain ``tasks`` prints one line per type, naming it."""
    result = run_cli("tasks")

    assert result.returncode == 0, result.stderr
    first_words = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert "echo" in first_words
    assert "sleep" in first_words


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
    assert [run["id"] for run in listed] == [second["run_id"], first["run_id"]]
    assert [run["name"] for run in listed] == ["two", "one"]
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
    for text in [row["result_data"] for row in rows] + [run["definition"], run["result_summary"]]:
        assert "sekrit" not in text
        assert "***" in text
    assert json.loads(run["definition"])["nodes"][0]["params"]["api_key"] == "***"
    for file in db_path.parent.glob(db_path.name + "*"):
        assert b"sekrit" not in file.read_bytes()
