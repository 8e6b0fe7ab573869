"""The daemon side of the Dask executor, end to end: a real daemon (or ``wfe-daemon
execute``) with ``executor = "dask"`` against real ``dask scheduler`` and ``dask worker``
processes (``tests/dask_cluster.py``), driven through the inbox, the CLI and HTTP.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import (
    Daemons,
    cli,
    drop,
    free_port,
    get,
    wait_result,
    wait_running,
    wait_until,
)
from dask_cluster import DaskCluster
from wfe_daemon.cluster import worker

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def dask_env(cluster: DaskCluster, remote: str = "sleep,echo", **extra: str) -> dict[str, str]:
    """The daemon's settings for ``cluster``: its address (and TLS files), the remote types."""
    env = {
        "WFE_EXECUTOR": "dask",
        "WFE_DASK_SCHEDULER": cluster.address,
        "WFE_REMOTE_TYPES": remote,
    }
    if cluster.tls is not None:
        env.update(
            WFE_DASK_TLS_CA_FILE=str(cluster.tls.ca_file),
            WFE_DASK_TLS_CERT=str(cluster.tls.cert),
            WFE_DASK_TLS_KEY=str(cluster.tls.key),
        )
    return {**env, **extra}


def mixed_workflow(name: str = "mixed", seconds: float = 0.2) -> dict[str, Any]:
    """``a`` (echo, local) -> ``b`` (sleep, remote, its seconds from ``a``) -> ``c`` (echo,
    local, quoting ``b``'s output)."""
    return {
        "name": name,
        "nodes": [
            {"id": "a", "type": "echo", "params": {"wait": seconds, "word": "hi"}},
            {
                "id": "b",
                "type": "sleep",
                "depends_on": ["a"],
                "params": {"seconds": "{{ a.wait }}"},
            },
            {
                "id": "c",
                "type": "echo",
                "depends_on": ["b"],
                "params": {"slept": "{{ b.slept }}", "text": "{{ a.word }} after {{ b.slept }}s"},
            },
        ],
    }


def outputs(summary: dict[str, Any]) -> dict[str, Any]:
    """Each node's status and output."""
    return {k: (n["status"], n.get("output")) for k, n in summary["nodes"].items()}


def running_on(cluster: DaskCluster) -> dict[str, list[str]]:
    """The attempts running on each worker now, by worker address."""
    with cluster.client() as client:
        return {a: info["running"] for a, info in client.run(worker.describe).items()}


def remote_events(daemon: Any) -> list[dict[str, Any]]:
    """The daemon's ``cluster.attempt`` log lines."""
    return list(daemon.events("cluster.attempt"))


@pytest.mark.timeout(90)
def test_execute_mixes_local_and_remote_nodes(
    dask_cluster: DaskCluster, run_cli: RunCli, write_workflow: Callable[..., Path]
) -> None:
    """``execute`` sends the remote type to a worker and keeps the rest local; the outputs,
    references across the two included, equal a local run's."""
    path = write_workflow(mixed_workflow())
    local = run_cli("execute", path)
    assert local.returncode == 0, local.stderr
    remote = run_cli("execute", path, env=dask_env(dask_cluster, remote="sleep"))
    assert remote.returncode == 0, remote.stderr
    assert outputs(json.loads(remote.stdout)) == outputs(json.loads(local.stdout))
    lines = [json.loads(line) for line in remote.stderr.splitlines() if line.startswith("{")]
    sent = [e for e in lines if e.get("event") == "cluster.attempt"]
    assert [(e["node_id"], e["executor"], e["outcome"]) for e in sent] == [("b", "dask", "success")]
    assert sent[0]["worker"] in {dask_cluster.worker_address(n) for n in ("w1", "w2")}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WFE_EXECUTOR": "dask"}, 'config: dask_scheduler: executor = "dask" needs'),
        ({"WFE_EXECUTOR": "ray"}, "config: WFE_EXECUTOR: must be one of local, dask"),
        (
            {
                "WFE_EXECUTOR": "dask",
                "WFE_DASK_SCHEDULER": "tcp://127.0.0.1:1",
                "WFE_REMOTE_TYPES": "sleep,slep",
            },
            "config: remote_types: unknown task type 'slep' (known:",
        ),
        (
            {"WFE_EXECUTOR": "dask", "WFE_DASK_SCHEDULER": "tls://127.0.0.1:1"},
            "config: dask_scheduler: tls://127.0.0.1:1 is a TLS address: set dask_tls_ca_file",
        ),
        (
            {"WFE_DASK_TLS_CERT": "cert.pem"},
            "config: dask_tls_cert: TLS needs all three files; also set dask_tls_ca_file,"
            " dask_tls_key",
        ),
    ],
)
def test_a_wrong_cluster_configuration_exits_2_with_one_line(
    run_cli: RunCli, write_workflow: Callable[..., Path], env: dict[str, str], expected: str
) -> None:
    """Each wrong Dask setting stops ``execute`` (and the daemon) with exit 2 and one line
    naming the key."""
    result = run_cli("execute", write_workflow(mixed_workflow()), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("wfe-daemon: " + expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
