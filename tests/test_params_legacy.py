"""Runs stored before ``params``, ``run`` and ``secrets`` became reserved node ids keep
showing their own nodes' outputs in the API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_helpers import Daemons, free_port, get

TOKEN = "legacy-t0ken"


def test_an_old_run_with_nodes_named_params_and_run_shows_their_outputs(
    daemons: Daemons, run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """A run whose nodes are called ``params`` and ``run`` (renamed in the database, as a
    run stored by an earlier version holds them): the API's node page resolves ``{{
    params.x }}`` and ``{{ run.y }}`` from those nodes' outputs, not the run's own."""
    doc = {
        "name": "old",
        "nodes": [
            {"id": "p", "type": "echo", "params": {"x": "from-node-p"}},
            {"id": "r", "type": "echo", "params": {"y": 41}},
            {
                "id": "b",
                "type": "echo",
                "depends_on": ["p", "r"],
                "params": {"v": "{{ p.x }}", "w": "{{ r.y }}"},
            },
        ],
    }
    env = daemons.env()
    done = run_cli("execute", write_workflow(doc), env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    with sqlite3.connect(daemons.db_path) as db:
        (text,) = db.execute(
            "SELECT definition FROM workflowrun WHERE id = ?", (run_id,)
        ).fetchone()
        old = json.loads(text)
        old["nodes"][0]["id"], old["nodes"][1]["id"] = "params", "run"
        old["nodes"][2]["depends_on"] = ["params", "run"]
        old["nodes"][2]["params"] = {"v": "{{ params.x }}", "w": "{{ run.y }}"}
        db.execute("UPDATE workflowrun SET definition = ? WHERE id = ?", (json.dumps(old), run_id))
        for new, was in (("params", "p"), ("run", "r")):
            db.execute(
                "UPDATE noderun SET node_id = ? WHERE workflow_id = ? AND node_id = ?",
                (new, run_id, was),
            )
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    status, body = get(port, f"/api/v1/runs/{run_id}/nodes/b")
    assert status == 200, body
    assert json.loads(body)["params"] == {"v": "from-node-p", "w": 41}
