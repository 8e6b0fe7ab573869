"""Run parameters: a workflow's ``params`` schema, its ``arguments``, ``-p`` and
``--params-file`` on ``execute``, ``validate`` and ``submit``, the API's body, and the
``{{ params.X }}``, ``{{ run.id }}``, ``{{ run.scheduled_for }}`` references; each test
drives the real command or a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_helpers import Daemons, cli, free_port, get, post_workflow, query, wait_result

TOKEN = "params-t0ken"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "region": {"enum": ["eu", "us"], "default": "eu"},
        "limit": {"type": "integer", "minimum": 1, "default": 1000},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["day"],
}


def export_doc(**extra: Any) -> dict[str, Any]:
    """A workflow whose one echo node shows every parameter and the run's own values."""
    return {
        "name": "export",
        "params": SCHEMA,
        "nodes": [
            {
                "id": "show",
                "type": "echo",
                "params": {
                    "day": "{{ params.day }}",
                    "region": "{{ params.region }}",
                    "limit": "{{ params.limit }}",
                    "text": "{{ params.region }}-{{ params.limit }}",
                    "run": "{{ run.id }}",
                },
            }
        ],
        **extra,
    }


Cli = Callable[..., subprocess.CompletedProcess[str]]


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The result summary ``execute`` printed."""
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_execute_takes_p_values_with_their_json_types_and_fills_defaults(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """``-p`` values are JSON when they parse, text otherwise; a whole-string reference keeps
    the type, defaults fill the rest, and ``{{ run.id }}`` is the run's id as a number."""
    path = write_workflow(export_doc())
    done = run_cli("execute", path, "-p", "day=2026-12-03", "-p", "limit=50")
    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    output = summary["nodes"]["show"]["output"]
    assert output == {
        "day": "2026-12-03",
        "region": "eu",
        "limit": 50,
        "text": "eu-50",
        "run": summary["run_id"],
    }


def test_p_wins_over_params_file_which_wins_over_the_document(
    run_cli: Cli, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """The document's ``arguments`` are the base, ``--params-file`` overrides them and
    ``-p`` overrides both; the stored definition holds the merged arguments."""
    path = write_workflow(export_doc(arguments={"day": "2026-01-01", "region": "us", "limit": 7}))
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"region": "eu", "limit": 8}))
    done = run_cli("execute", path, "--params-file", values, "-p", "limit=9")
    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    output = summary["nodes"]["show"]["output"]
    assert (output["day"], output["region"], output["limit"]) == ("2026-01-01", "eu", 9)
    rows = query(tmp_path / "data" / "wfe.db", "SELECT definition FROM workflowrun")
    stored = json.loads(rows[0]["definition"])
    assert stored["arguments"] == {"day": "2026-01-01", "region": "eu", "limit": 9}


def test_bad_arguments_reject_the_run_with_every_problem(
    run_cli: Cli, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """A value outside the ``enum``, a wrong format, a wrong type and a missing required
    value each make a line of the REJECTED summary; nothing runs; the run is recorded."""
    path = write_workflow(export_doc())
    done = run_cli("execute", path, "-p", "region=asia", "-p", "limit=zero", "-p", 'tags=["a",1]')
    assert done.returncode == 2
    summary = summary_of(done)
    assert summary["status"] == "REJECTED"
    assert summary["errors"] == [
        "arguments.day: required, and params gives no default",
        "arguments.limit: 'zero' is not of type 'integer'",
        "arguments.region: 'asia' is not one of ['eu', 'us']",
        "arguments.tags.1: 1 is not of type 'string'",
    ]
    assert summary["nodes"] == {}
    done = run_cli("execute", path, "-p", "day=2026-02-30")
    assert summary_of(done)["errors"] == ["arguments.day: '2026-02-30' is not a 'date'"]
    rows = query(tmp_path / "data" / "wfe.db", "SELECT status FROM workflowrun ORDER BY id")
    assert [row["status"] for row in rows] == ["REJECTED", "REJECTED"]


def test_validate_names_reserved_ids_and_bad_references(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """``validate`` rejects node ids ``params``, ``run`` and ``secrets`` saying why, and
    references to undeclared parameters, unknown run fields, a missing scheduled_for, and
    a parameter without a value."""
    doc = {
        "name": "bad",
        "params": {"type": "object", "properties": {"day": {"type": "string"}}},
        "nodes": [
            {"id": "params", "type": "echo"},
            {"id": "run", "type": "echo"},
            {"id": "secrets", "type": "echo"},
            {
                "id": "a",
                "type": "echo",
                "params": {
                    "x": "{{ params.dya }}",
                    "y": "{{ run.name }}",
                    "z": "{{ run.scheduled_for }}",
                    "w": "{{ params.day }}",
                },
            },
        ],
    }
    done = run_cli("validate", write_workflow(doc))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "nodes[0].id: node id 'params' is reserved: {{ params.X }} refers to the run's parameters",
        "nodes[1].id: node id 'run' is reserved: {{ run.id }} and {{ run.scheduled_for }}"
        " refer to the run itself",
        "nodes[2].id: node id 'secrets' is reserved: {{ secrets.NAME }} refers to a secret in"
        " secrets_dir",
        "node 'a': reference {{ params.dya }} names parameter 'dya', which params does not"
        " declare (did you mean 'day'?)",
        "node 'a': reference {{ run.name }} must be {{ run.id }} or {{ run.scheduled_for }}",
        "node 'a': reference {{ run.scheduled_for }} needs the run's scheduled_for: a schedule"
        ' sets it, or set a top-level "scheduled_for" (an ISO 8601 date-time with an offset)',
        "node 'a': reference {{ params.day }} needs a value for parameter 'day': give it in"
        " arguments (-p day=...) or a default in params",
    ]
    done = run_cli("validate", write_workflow({**doc, "nodes": doc["nodes"][3:]}), "-p", "day=x")
    assert "{{ params.day }}" not in done.stderr


def test_validate_reports_a_bad_schema_stray_arguments_and_a_bad_scheduled_for(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """A ``params`` that is no valid object schema, ``arguments`` with no ``params``, and a
    ``scheduled_for`` without a time or an offset are each reported."""
    echo = [{"id": "a", "type": "echo"}]
    bad_schema = {"name": "s", "params": {"type": "string", "minLength": -1}, "nodes": echo}
    done = run_cli("validate", write_workflow(bad_schema))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "params.minLength: -1 is less than the minimum of 0",
        'params: must be a schema of "type": "object" (named values)',
    ]
    stray = {"name": "s", "arguments": {"day": 1}, "nodes": echo}
    done = run_cli("validate", write_workflow(stray), "-p", "n=2")
    assert done.stderr.splitlines() == [
        "arguments: unknown 'day', 'n': the workflow declares no params"
    ]
    for when in ("2026-12-04", "2026-12-04T06:00:00", "yesterday"):
        done = run_cli(
            "validate", write_workflow({"name": "s", "scheduled_for": when, "nodes": echo})
        )
        assert done.stderr.startswith("scheduled_for: must be an ISO 8601 date-time with an offset")


def test_scheduled_for_set_by_hand_resolves(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """A top-level ``scheduled_for`` (a backfill) is ``{{ run.scheduled_for }}``, as written."""
    doc = {
        "name": "backfill",
        "scheduled_for": "2026-11-30T06:00:00+01:00",
        "nodes": [
            {
                "id": "a",
                "type": "echo",
                "params": {"at": "{{ run.scheduled_for }}", "on": "day {{ run.scheduled_for }}"},
            }
        ],
    }
    done = run_cli("execute", write_workflow(doc))
    assert done.returncode == 0, done.stderr
    assert summary_of(done)["nodes"]["a"]["output"] == {
        "at": "2026-11-30T06:00:00+01:00",
        "on": "day 2026-11-30T06:00:00+01:00",
    }


def test_bad_p_and_params_file_are_usage_errors(
    run_cli: Cli, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """A ``-p`` without ``=``, a missing ``--params-file`` and one not holding an object
    exit 2 with one line, and nothing is recorded."""
    path = write_workflow(export_doc())
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    cases = [
        (("-p", "day"), "wfe-daemon: -p: expected KEY=VALUE, got 'day'"),
        (("-p", "=3"), "wfe-daemon: -p: expected KEY=VALUE, got '=3'"),
        (("--params-file", "nope.json"), "wfe-daemon: --params-file: cannot read nope.json:"),
        (("--params-file", listed), "must hold a JSON object of parameter values, got a list"),
        (("--params-file", broken), f"wfe-daemon: --params-file: {broken}:"),
    ]
    for args, message in cases:
        done = run_cli("execute", path, *args)
        assert done.returncode == 2, args
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert message in done.stderr, (message, done.stderr)
    assert not (tmp_path / "data" / "wfe.db").exists()


def test_a_p_that_is_not_utf8_is_a_usage_error(
    cli_env: dict[str, str], write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """``-p`` with undecodable bytes in its value or its name exits 2 with one line naming
    the parameter, for ``validate``, ``execute`` and ``submit``; nothing is recorded."""
    path = os.fsencode(write_workflow(export_doc()))
    env = {k.encode(): v.encode() for k, v in cli_env.items()}
    cases = [
        (b"day=\xff", "wfe-daemon: -p: the value of 'day' is not UTF-8 text"),
        (b"d\xffy=1", "wfe-daemon: -p: the parameter name 'd\\xffy' is not UTF-8 text"),
    ]
    for command in (b"validate", b"execute", b"submit"):
        for pair, message in cases:
            done = subprocess.run(
                [sys.executable.encode(), b"-m", b"wfe_daemon", command, path, b"-p", pair],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                timeout=30,
                check=False,
            )
            stderr = done.stderr.decode("utf-8", "replace")
            assert done.returncode == 2, (command, pair, stderr)
            assert stderr.splitlines() == [message], (command, stderr)
    assert not (tmp_path / "data" / "wfe.db").exists()


def test_submit_p_reaches_the_daemon_through_the_inbox_and_the_api(daemons: Daemons) -> None:
    """``submit -p`` hands the values to a running daemon, through its inbox (no
    ``http_port``) and through its HTTP API; ``--wait`` shows the resolved output."""
    path = daemons.root / "export.json"
    path.write_text(json.dumps(export_doc()))
    daemon = daemons.start()
    done = cli(daemons, "submit", path, "--name", "by-file", "-p", "day=2026-12-01")
    assert done.returncode == 0, done.stderr
    result = wait_result(daemons.outbox, "by-file")
    assert result["nodes"]["show"]["output"]["day"] == "2026-12-01"
    daemon.terminate()
    env = {"WFE_HTTP_PORT": str(free_port()), "WFE_API_TOKEN": TOKEN}
    daemons.start(**env)
    done = cli(
        daemons,
        "submit",
        path,
        "--name",
        "by-api",
        "-p",
        "day=2026-12-02",
        "-p",
        "region=us",
        "--wait",
        **env,
    )
    assert done.returncode == 0, done.stderr
    run_id, summary_text = done.stdout.split("\n", 1)
    summary = json.loads(summary_text)
    assert summary["nodes"]["show"]["output"]["text"] == "us-1000"
    assert summary["run_id"] == int(run_id)
    done = cli(daemons, "submit", path, "-p", "region=mars", **env)
    assert done.returncode != 0
    assert "arguments.region: 'mars' is not one of ['eu', 'us']" in done.stderr
    assert "arguments.day: required, and params gives no default" in done.stderr


def post(port: int, doc: dict[str, Any]) -> tuple[int, Any]:
    """POST ``doc`` to the API with this module's token."""
    return post_workflow(port, doc, TOKEN)


def test_the_api_body_carries_arguments(daemons: Daemons) -> None:
    """A document POSTed with ``arguments`` runs with them (the node's page shows the
    resolved params); invalid ones are answered 422 with every problem."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    status, answer = post(port, export_doc(arguments={"day": "2026-12-03", "limit": 3}))
    assert status == 201, answer
    result = wait_result(daemons.outbox, "export")
    assert result["nodes"]["show"]["output"]["text"] == "eu-3"
    status, body = get(port, f"/api/v1/runs/{answer['run_id']}/nodes/show")
    assert status == 200
    params = json.loads(body)["params"]
    assert (params["day"], params["limit"], params["run"]) == ("2026-12-03", 3, answer["run_id"])
    status, answer = post(port, export_doc(arguments={"limit": 0}))
    assert status == 422
    text = json.dumps(answer)
    assert "arguments.limit: 0 is less than the minimum of 1" in text
    assert "arguments.day: required, and params gives no default" in text


def test_graph_of_a_file_takes_p_for_required_parameters(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """``graph FILE`` of a workflow with a required parameter needs its value, as a run
    would, and draws it once given with ``-p``."""
    path = write_workflow(export_doc())
    done = run_cli("graph", path)
    assert done.returncode == 2
    assert "arguments.day: required, and params gives no default" in done.stderr
    done = run_cli("graph", path, "-p", "day=2026-12-03")
    assert done.returncode == 0, done.stderr
    assert "show" in done.stdout
