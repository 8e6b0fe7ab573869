"""Tests of ``wfe-daemon submit`` and ``wfe-daemon retry --detach``: the real command
against a real daemon, through its HTTP API on 127.0.0.1 or through its inbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import (
    Daemons,
    cli,
    echo_doc,
    free_port,
    query,
    read_json,
    results,
    wait_result,
    wait_until,
)

TOKEN = "cli-t0ken"
FAILING = {
    "name": "half",
    "nodes": [
        {"id": "a", "type": "echo", "params": {"v": 1}},
        {"id": "b", "type": "sleep", "depends_on": ["a"], "timeout": 0.2, "params": {"seconds": 5}},
    ],
}


def write(daemons: Daemons, name: str, doc: dict[str, Any] | bytes) -> Path:
    """A workflow file outside the inbox, to submit."""
    path = daemons.root / name
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return path


def api_env() -> dict[str, str]:
    """The environment of a daemon (and a command) using the HTTP API on a free port."""
    return {"WFE_HTTP_PORT": str(free_port()), "WFE_API_TOKEN": TOKEN}


def test_submit_through_the_api_prints_the_run_id(daemons: Daemons) -> None:
    """With ``http_port`` set, ``submit`` POSTs the file and prints the run id; the result
    is published under the file's stem; ``--json`` prints the daemon's answer."""
    env = api_env()
    daemons.start(**env)
    done = cli(daemons, "submit", str(write(daemons, "daily.json", echo_doc("w"))), **env)
    assert done.returncode == 0, done.stderr
    run_id = int(done.stdout)
    assert wait_result(daemons.outbox, "daily")["run_id"] == run_id
    path = write(daemons, "x.json", echo_doc("w"))
    done = cli(daemons, "submit", str(path), "--name", "named", "--json", **env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "RUNNING"
    assert answer["location"] == f"/api/v1/runs/{answer['run_id']}"
    assert wait_result(daemons.outbox, "named")["run_id"] == answer["run_id"]


def test_submit_reads_the_token_from_api_token_file(daemons: Daemons) -> None:
    """The command sends the token of ``api_token_file`` when ``WFE_API_TOKEN`` is unset,
    with an ``--idempotency-key`` that makes a second submission a duplicate."""
    token_file = daemons.root / "token"
    token_file.write_text(TOKEN + "\n")
    env = {"WFE_HTTP_PORT": str(free_port()), "WFE_API_TOKEN_FILE": str(token_file)}
    daemons.start(**env)
    path = write(daemons, "keyed.json", echo_doc("w"))
    first = cli(daemons, "submit", str(path), "--idempotency-key", "k-1", **env)
    assert first.returncode == 0, first.stderr
    second = cli(daemons, "submit", str(path), "--idempotency-key", "k-1", "--json", **env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["duplicate_of"] == int(first.stdout)


def test_submit_through_the_inbox_prints_the_run_id(daemons: Daemons) -> None:
    """Without ``http_port``, ``submit`` copies the file into the inbox and prints the run
    id the daemon recorded for it."""
    daemons.start()
    path = write(daemons, "local.json", echo_doc("w"))
    done = cli(daemons, "submit", str(path), "--name", "copied")
    assert done.returncode == 0, done.stderr
    run_id = int(done.stdout)
    result = wait_result(daemons.outbox, "copied")
    assert (result["run_id"], result["source"]) == (run_id, "copied.json")
    assert [p.name for p in daemons.inbox.iterdir() if p.is_file()] == []


@pytest.mark.timeout(90)
def test_submit_through_the_inbox_says_when_no_daemon_takes_it(daemons: Daemons) -> None:
    """With no daemon on the inbox, ``submit`` gives up after its timeout with a clear
    message, exit 1, and leaves the file for a daemon to come."""
    daemons.inbox.mkdir(parents=True)
    path = write(daemons, "alone.json", echo_doc("w"))
    done = cli(daemons, "submit", str(path))
    assert done.returncode == 1
    assert "no daemon took" in done.stderr
    assert (daemons.inbox / "alone.json").exists()
    assert not list(daemons.inbox.glob(".*"))


@pytest.mark.timeout(90)
def test_submit_wait_exits_as_execute_does(daemons: Daemons) -> None:
    """``submit --wait`` prints the summary once the run ends and exits 0 for SUCCESS, 1 for
    a run that did not fully succeed, 2 for a workflow the daemon rejects (through the API:
    one ``wfe-daemon:`` line each; through the inbox: a REJECTED summary)."""
    env = api_env()
    daemons.start(**env)
    done = cli(daemons, "submit", str(write(daemons, "ok.json", echo_doc("w"))), "--wait", **env)
    assert done.returncode == 0, done.stderr
    run_id, _, summary = done.stdout.partition("\n")
    assert json.loads(summary)["run_id"] == int(run_id)
    assert json.loads(summary)["status"] == "SUCCESS"
    done = cli(daemons, "submit", str(write(daemons, "half.json", FAILING)), "--wait", **env)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout.partition("\n")[2])["status"] == "PARTIAL_SUCCESS"
    bad = write(daemons, "bad.json", {"name": "bad", "nodes": [{"id": "a", "type": "nope"}]})
    done = cli(daemons, "submit", str(bad), "--wait", **env)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "wfe-daemon: the workflow is not valid"
    assert any("nope" in line and line.startswith("wfe-daemon: ") for line in lines[1:])
    done = cli(daemons, "submit", str(bad), "--wait", "--http-port", "0")
    assert done.returncode == 2
    assert json.loads(done.stdout.partition("\n")[2])["status"] == "REJECTED"


def test_submit_to_an_unreachable_daemon_exits_1(daemons: Daemons) -> None:
    """``submit`` with an ``http_port`` nobody listens on says so in one line, exit 1."""
    path = write(daemons, "w.json", echo_doc("w"))
    done = cli(daemons, "submit", str(path), "--http-port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.startswith("wfe-daemon: cannot reach the daemon at http://127.0.0.1:")
    assert len(done.stderr.splitlines()) == 1


def test_retry_detach_lets_the_daemon_run_the_retry(daemons: Daemons) -> None:
    """``retry RUN_ID --detach`` prints the new run id at once; the daemon runs the retry
    and publishes it with ``retry_of``. Without ``http_port`` it explains what it needs."""
    env = api_env()
    daemons.start(**env)
    done = cli(daemons, "submit", str(write(daemons, "half.json", FAILING)), "--wait", **env)
    first = int(done.stdout.partition("\n")[0])
    done = cli(daemons, "retry", str(first), "--detach", **env)
    assert done.returncode == 0, done.stderr
    new = int(done.stdout)
    assert new != first
    published = wait_until(
        lambda: [d for p in results(daemons.outbox) if (d := read_json(p)) and d["run_id"] == new],
        15,
        "the retry's result",
    )[0]
    assert published["retry_of"] == first
    rows = query(daemons.db_path, "SELECT retry_of FROM workflowrun WHERE id = ?", new)
    assert rows == [{"retry_of": first}]
    done = cli(daemons, "retry", "999", "--detach", **env)
    assert (done.returncode, done.stderr) == (1, "wfe-daemon: no run 999\n")
    done = cli(daemons, "retry", str(first), "--detach", "--http-port", "0")
    assert done.returncode == 2
    assert "--detach needs the daemon's HTTP API" in done.stderr
