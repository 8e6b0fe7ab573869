"""The daemon side of the Dask executor, end to end: a real daemon (or ``wfe-daemon
execute``) with ``executor = "dask"`` against the shared ``dask scheduler`` and
``dask worker`` processes (``tests/dask_cluster.py``), driven through the inbox, the CLI
and HTTP; and the configurations refused before anything runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_helpers import (
    Daemons,
    cli,
    drop,
    free_port,
    from_checkout,
    get,
    wait_result,
    wait_running,
)
from dask_cluster import DaskCluster
from dask_daemon_helpers import (
    attempts_running,
    dask_env,
    mixed_workflow,
    outputs,
    remote_events,
    secrets_dir,
    sleeper,
    wait_free,
)

RunCli = Callable[..., subprocess.CompletedProcess[str]]


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
        (
            {
                "WFE_EXECUTOR": "dask",
                "WFE_DASK_SCHEDULER": "tls://127.0.0.1:1",
                "WFE_DASK_TLS_CA_FILE": "absent-ca.pem",
                "WFE_DASK_TLS_CERT": "absent-cert.pem",
                "WFE_DASK_TLS_KEY": "absent-key.pem",
            },
            "config: dask_tls_ca_file: cannot read absent-ca.pem: No such file or directory",
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
    daemon = daemons.start(**dask_env(dask_cluster), WFE_SECRETS_DIR=str(secrets_dir(daemons.root)))
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


def test_dask_without_distributed_installed_names_the_extra(
    run_cli: RunCli, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """``executor = "dask"`` where ``distributed`` cannot be imported stops with exit 2 and
    one line saying what to install."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # A None entry in sys.modules is how Python marks a module as not importable.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['distributed'] = None\n")
    env = {
        "PYTHONPATH": str(blocker),
        "WFE_EXECUTOR": "dask",
        "WFE_DASK_SCHEDULER": "tcp://127.0.0.1:1",
    }
    result = run_cli("execute", write_workflow(mixed_workflow()), env=env)
    assert result.returncode == 2
    assert result.stderr == (
        'wfe-daemon: config: executor: "dask" needs the distributed package:'
        " install wfe-daemon[dask]\n"
    )


def test_the_daemon_refuses_a_wrong_cluster_configuration(daemons: Daemons) -> None:
    """``wfe-daemon run`` with ``executor = "dask"`` and no scheduler exits 2 with one line,
    before taking anything from the inbox."""
    result = cli(daemons, "run", WFE_EXECUTOR="dask", WFE_REMOTE_TYPES="sleep")
    assert result.returncode == 2
    assert result.stderr.startswith('wfe-daemon: config: dask_scheduler: executor = "dask"')
    assert len(result.stderr.splitlines()) == 1


def test_the_local_executor_imports_nothing_of_the_cluster(
    cli_env: dict[str, str], write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """With the default ``executor = "local"`` a run imports neither ``distributed`` nor
    the cluster layer (``python -X importtime`` lists every module imported)."""
    path = write_workflow(mixed_workflow())
    importtime = from_checkout("benchmarks._importtime")
    done = importtime.import_times(["-m", "wfe_daemon", "execute", str(path)], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    modules = done.modules
    assert "wfe_daemon.runtime.engine" in modules
    assert not [m for m in modules if m.startswith(("distributed", "dask", "wfe_daemon.cluster"))]
