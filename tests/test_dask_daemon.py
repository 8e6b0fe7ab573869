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


# -- a daemon against the shared cluster ---------------------------------------------


def sleeper(name: str, seconds: float, **node: Any) -> dict[str, Any]:
    """One remote ``sleep`` node ``s`` (with ``node``'s extra fields)."""
    return {
        "name": name,
        "nodes": [{"id": "s", "type": "sleep", "params": {"seconds": seconds}, **node}],
    }


def wait_free(cluster: DaskCluster, keys: set[str] | None = None) -> None:
    """Wait until no attempt (of ``keys``, default any) runs on the cluster's workers."""

    def free() -> bool:
        running = {key for found in running_on(cluster).values() for key in found}
        return not (running & keys if keys is not None else running)

    wait_until(free, 10, "the workers to be free")


def attempts_running(cluster: DaskCluster, count: int) -> set[str]:
    """Wait until ``count`` attempts run on the workers; their keys."""

    def found() -> set[str] | None:
        keys = {key for found in running_on(cluster).values() for key in found}
        return keys if len(keys) >= count else None

    return wait_until(found, 20, f"{count} attempts running on the workers")


@pytest.mark.timeout(60)
def test_a_timeout_on_the_worker_fails_the_node_and_frees_the_worker(
    dask_cluster: DaskCluster, daemons: Daemons
) -> None:
    """A remote node past its timeout is FAILED "timed out after 1s", and nothing of it
    is left running on the worker."""
    daemon = daemons.start(**dask_env(dask_cluster))
    drop(daemons.inbox, "slow.json", sleeper("slow", 30, timeout=1))
    result = wait_result(daemons.outbox, "slow", timeout=20)
    assert result["status"] == "FAILED"
    assert result["nodes"]["s"]["error"] == "timed out after 1s"
    wait_free(dask_cluster)
    [event] = remote_events(daemon)
    assert event["executor"] == "dask" and event["node_id"] == "s"


@pytest.mark.timeout(60)
def test_an_operator_cancel_stops_the_remote_attempt(
    dask_cluster: DaskCluster, daemons: Daemons
) -> None:
    """``wfe-daemon cancel`` of a run whose node runs on a worker: the run is CANCELLED and
    the worker is free again at once (not after the 30 s the node would take)."""
    daemons.start(**dask_env(dask_cluster))
    drop(daemons.inbox, "long.json", sleeper("long", 30))
    run_id = wait_running(daemons.db_path, "s")
    attempts_running(dask_cluster, 1)
    assert cli(daemons, "cancel", str(run_id)).returncode == 0
    result = wait_result(daemons.outbox, "long", timeout=20)
    assert result["status"] == "CANCELLED"
    assert result["nodes"]["s"]["status"] == "CANCELLED"
    wait_free(dask_cluster)


@pytest.mark.timeout(60)
def test_a_secret_is_not_sent_without_tls(dask_cluster: DaskCluster, daemons: Daemons) -> None:
    """A remote node whose params hold a secret fails without being sent while TLS is
    off, saying why and what to set; the secret itself is nowhere in the result."""
    secrets = daemons.root / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cr3t-value\n")
    daemon = daemons.start(**dask_env(dask_cluster), WFE_SECRETS_DIR=str(secrets))
    doc = {
        "name": "secret",
        "nodes": [{"id": "e", "type": "echo", "params": {"auth": "{{ secrets.token }}"}}],
    }
    drop(daemons.inbox, "secret.json", doc)
    result = wait_result(daemons.outbox, "secret", timeout=20)
    error = result["nodes"]["e"]["error"]
    assert result["status"] == "FAILED"
    assert error.startswith("params hold a secret, which is sent to the Dask cluster only over")
    assert "dask_tls_ca_file" in error
    assert "s3cr3t" not in json.dumps(result) + daemon.output()


@pytest.mark.timeout(90)
def test_health_and_metrics_show_the_cluster(dask_cluster: DaskCluster, daemons: Daemons) -> None:
    """``/healthz`` reports the connected cluster and its workers; ``/metrics`` counts the
    remote attempts by worker."""
    port = free_port()
    daemons.start(**dask_env(dask_cluster), WFE_HTTP_PORT=str(port))
    drop(daemons.inbox, "m.json", sleeper("m", 0.05))
    assert wait_result(daemons.outbox, "m", timeout=20)["status"] == "SUCCESS"
    status, body = get(port, "/healthz")
    health = json.loads(body)
    assert status == 200
    assert health["executor"] == "dask"
    assert health["cluster"]["connected"] is True
    assert health["cluster"]["workers"] == 2
    assert health["cluster"]["last_error"] is None
    text = get(port, "/metrics")[1].decode()
    assert "wfe_cluster_connected 1.0" in text
    assert "wfe_cluster_workers 2.0" in text
    counted = [line for line in text.splitlines() if line.startswith("wfe_remote_attempts_total")]
    assert len(counted) == 1 and 'outcome="success"' in counted[0]
    assert 'executor="dask"' in counted[0] and 'worker="tcp://127.0.0.1:' in counted[0]
