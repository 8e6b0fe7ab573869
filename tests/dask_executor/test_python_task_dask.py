"""The ``python`` task's misbehaving functions run on a Dask worker: each fails its node
with the same error as in a local run, and neither the worker nor the daemon stops."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, wait_result
from dask_cluster import DaskCluster
from dask_daemon_helpers import dask_env, remote_events
from test_python_task_faults import FAULTS

NODES = {
    "list": ("faults:holds_itself", {}),
    "dict": ("faults:dict_holds_itself", {}),
    "async": ("faults:async_holds_itself", {}),
    "deep": ("faults:deep", {"levels": 5000}),
    "fine": ("faults:deep", {"levels": 200}),
    "unreadable": ("faults:unreadable", {}),
    "async_unreadable": ("faults:async_unreadable", {}),
    "url": ("faults:fetch_failed", {}),
    "exit": ("faults:generator_exit", {}),
    "stop": ("faults:stop_iteration", {}),
    "cancelled": ("faults:cancelled", {}),
    "async_cancelled": ("faults:async_cancelled", {}),
}
"""Nodes by id: the function each calls and its kwargs."""

NESTING = "output: nested deeper than 250 levels (or it holds itself)"
UNREADABLE = "Unreadable: <its message could not be read: RuntimeError>"
EXPECTED = {
    "list": NESTING,
    "dict": NESTING,
    "async": NESTING,
    "deep": NESTING,
    "fine": None,
    "unreadable": UNREADABLE,
    "async_unreadable": UNREADABLE,
    "url": "ValueError: GET https://***@example.com/x?token=*** failed",
    "exit": "GeneratorExit: closed",
    "stop": "RuntimeError: coroutine raised StopIteration",
    "cancelled": "CancelledError: its own",
    "async_cancelled": "CancelledError: its own",
}
"""What each node's error reads, wherever it ran (``None``: it succeeded)."""


def workflow(name: str) -> dict[str, Any]:
    """A workflow of every node of :data:`NODES`, each with a short timeout."""
    nodes = [
        {
            "id": node_id,
            "type": "python",
            "timeout": 20,
            "params": {"function": function, "kwargs": kwargs},
        }
        for node_id, (function, kwargs) in NODES.items()
    ]
    return {"name": name, "nodes": nodes}


@pytest.mark.timeout(120)
def test_misbehaving_functions_fail_alike_on_a_worker_and_locally(
    new_dask_cluster: Callable[..., DaskCluster],
    daemons: Daemons,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_workflow: Callable[..., Path],
) -> None:
    """A return value holding itself or nested too deeply, an exception whose message
    cannot be read, ``GeneratorExit``, ``StopIteration`` and a ``CancelledError`` of the
    function's own fail their node on a worker with the error ``wfe-daemon execute`` gives;
    the worker then runs the next workflow's node."""
    cluster = new_dask_cluster(workers=("w1",), env={"WFE_ENABLE_PYTHON": "true"})
    (cluster.module_dir / "faults.py").write_text(textwrap.dedent(FAULTS))
    daemon = daemons.start(**dask_env(cluster, remote="python"), WFE_ENABLE_PYTHON="true")

    drop(daemons.inbox, "faults.json", workflow("faults"))
    remote = wait_result(daemons.outbox, "faults", timeout=60)
    drop(
        daemons.inbox,
        "next.json",
        {
            "name": "next",
            "nodes": [
                {
                    "id": "g",
                    "type": "python",
                    "params": {"function": "faults:GREETER.hello", "kwargs": {"who": "me"}},
                }
            ],
        },
    )
    after = wait_result(daemons.outbox, "next", timeout=30)
    local = run_cli(
        "execute",
        write_workflow(workflow("local")),
        env={"PYTHONPATH": str(cluster.module_dir), "WFE_ENABLE_PYTHON": "1"},
    )

    remote_errors = {key: entry.get("error") for key, entry in remote["nodes"].items()}
    local_errors = {
        key: entry.get("error") for key, entry in json.loads(local.stdout)["nodes"].items()
    }
    assert remote_errors == EXPECTED
    assert local_errors == EXPECTED
    assert remote["nodes"]["fine"]["output"] == json.loads(local.stdout)["nodes"]["fine"]["output"]
    assert after["nodes"]["g"]["output"] == "hello me"
    assert "Traceback" not in local.stderr
    ran = {
        (e["node_id"], e["worker"])
        for e in remote_events(daemon)
        if e["run_id"] == remote["run_id"]
    }
    assert ran == {(node_id, cluster.worker_address("w1")) for node_id in NODES}
    assert daemon.proc.poll() is None
