"""The Dask executor when things differ or break, each test on a cluster of its own: a
worker killed, a plugin on one worker only, the scheduler down and back, TLS, the daemon
killed and restarted, shutdown, and ``python`` nodes on the workers.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, free_port, get, wait_result, wait_until
from dask_cluster import DaskCluster
from dask_daemon_helpers import (
    attempts_running,
    dask_env,
    gate_plugin,
    gated,
    mixed_workflow,
    plugin_folder,
    remote_events,
    running_on,
    secrets_dir,
    sleeper,
    wait_free,
    worker_of,
)


@pytest.mark.timeout(120)
def test_a_killed_worker_is_one_failed_attempt_then_a_retry_elsewhere(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """SIGKILL of the worker running a node's attempt fails that attempt, naming the
    worker; the node's retry runs on the other worker and succeeds (2 attempts)."""
    plugin, gate = gate_plugin(daemons.root), daemons.root / "gate"
    cluster = new_dask_cluster(workers=("w1", "w2"), env={"PYTHONPATH": str(plugin)})
    daemon = daemons.start(**dask_env(cluster, remote="gate"), PYTHONPATH=str(plugin))
    # The attempt runs until the gate opens: killed mid-attempt however loaded the machine.
    drop(daemons.inbox, "k.json", gated("k", gate, retries=1, retry_delay=0.1))
    keys = attempts_running(cluster, 1)
    victim = worker_of(keys, cluster, ("w1", "w2"))
    address = cluster.worker_address(victim)
    cluster.kill_worker(victim)
    gate.touch()  # the retry ends as soon as it runs
    result = wait_result(daemons.outbox, "k", timeout=60)
    assert result["status"] == "SUCCESS"
    assert result["nodes"]["s"]["attempts"] == 2
    [retry] = daemon.events("node.retry")
    assert retry["error"] == f"worker {address} died during the attempt"
    ran = [(e["attempt"], e["worker"], e["outcome"]) for e in remote_events(daemon)]
    survivor = cluster.worker_address("w2" if victim == "w1" else "w1")
    assert ran == [(1, address, "failure"), (2, survivor, "success")]


def where_plugin(root: Path) -> Path:
    """A folder holding the ``where`` plugin (it returns where it ran) as a distribution."""
    execute = 'return {"pid": os.getpid(), "n": params["n"]}'
    return plugin_folder(root / "plugin", "where", "Returns where it ran.", execute, "import os")


def where_nodes(name: str, count: int) -> dict[str, Any]:
    """``count`` independent ``where`` nodes."""
    nodes = [{"id": f"n{i}", "type": "where", "params": {"n": i}} for i in range(count)]
    return {"name": name, "nodes": nodes}


@pytest.mark.timeout(120)
def test_an_attempt_goes_only_to_workers_that_have_its_type(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons, tmp_path: Path
) -> None:
    """With the plugin on one good worker only, every attempt of its type goes there (a
    worker with a bad configuration is left out, and logged); once no worker has it, the
    node fails with a message naming the type and what to do."""
    plugin = where_plugin(tmp_path)
    cluster = new_dask_cluster(
        workers={
            "plugged": {"env": {"PYTHONPATH": str(plugin)}},
            "plain": {},
            "broken": {"env": {"PYTHONPATH": str(plugin), "WFE_MAX_CONCURRENT_TASKS": "-3"}},
        }
    )
    daemon = daemons.start(**dask_env(cluster, remote="where"), PYTHONPATH=str(plugin))
    [refused] = wait_until(lambda: daemon.events("cluster.mismatch"), 20, "the bad worker")
    assert refused["worker"] == cluster.worker_address("broken")
    assert refused["error"].startswith("not ready: ")
    assert "WFE_MAX_CONCURRENT_TASKS: must be >= 1" in refused["error"]
    drop(daemons.inbox, "p.json", where_nodes("p", 6))
    result = wait_result(daemons.outbox, "p", timeout=30)
    assert result["status"] == "SUCCESS"
    plugged = cluster.worker_address("plugged")
    assert {e["worker"] for e in remote_events(daemon)} == {plugged}
    cluster.stop_worker("plugged")
    # The daemon learns within a second or two that the worker left.
    wait_until(
        lambda: any(e.get("workers") == 1 for e in daemon.events("cluster.workers")),
        10,
        "the daemon to see one worker",
    )
    drop(daemons.inbox, "q.json", where_nodes("q", 1))
    result = wait_result(daemons.outbox, "q", timeout=30)
    assert result["status"] == "FAILED"
    assert result["nodes"]["n0"]["error"] == (
        "no worker of the Dask cluster has task type 'where': install it (the same"
        " wfe-daemon version and plugins) on the workers"
    )


@pytest.mark.timeout(150)
def test_the_scheduler_down_then_back_heals_without_a_restart(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """With the scheduler down the daemon starts, runs local nodes, fails remote ones with
    a clear message and says so in ``/healthz`` (still 200); a scheduler started again at
    the same address is found, and remote nodes run, without a restart."""
    cluster = new_dask_cluster(workers=("w1",))
    address = cluster.address
    cluster.stop_scheduler()
    port = free_port()
    daemon = daemons.start(**dask_env(cluster, remote="sleep"), WFE_HTTP_PORT=str(port))
    drop(daemons.inbox, "down.json", mixed_workflow("down", 0.01))
    result = wait_result(daemons.outbox, "down", timeout=40)
    assert result["nodes"]["a"]["status"] == "SUCCESS"
    assert result["nodes"]["b"]["status"] == "FAILED"
    assert result["nodes"]["b"]["error"].startswith(
        f"the Dask cluster at {address} is not connected ("
    )
    assert result["nodes"]["b"]["error"].endswith("); the attempt was not sent")
    status, body = get(port, "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["cluster"]["connected"] is False
    assert health["cluster"]["last_error"]
    [warning] = daemon.events("cluster.unreachable")[:1]
    assert warning["level"] == "warning" and warning["scheduler"] == address
    cluster.start_scheduler()
    cluster.start_worker("w1")
    wait_until(
        lambda: json.loads(get(port, "/healthz")[1])["cluster"]["workers"] == 1,
        60,
        "the daemon to reconnect and see the worker",
    )
    drop(daemons.inbox, "up.json", mixed_workflow("up", 0.01))
    assert wait_result(daemons.outbox, "up", timeout=30)["status"] == "SUCCESS"
    assert daemon.events("cluster.connected")
    # Lost while connected: seen, reported, and remote nodes fail with the reason.
    cluster.stop_scheduler()
    wait_until(
        lambda: json.loads(get(port, "/healthz")[1])["cluster"]["connected"] is False,
        30,
        "the daemon to see the scheduler gone",
    )
    drop(daemons.inbox, "gone.json", mixed_workflow("gone", 0.01))
    result = wait_result(daemons.outbox, "gone", timeout=40)
    assert result["nodes"]["b"]["error"].startswith(f"the Dask cluster at {address} is not")


@pytest.mark.timeout(120)
def test_tls_with_temporary_certificates(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """Over TLS remote nodes run, a secret in their params included (sent encrypted)."""
    cluster = new_dask_cluster(workers=("w1",), tls=True)
    assert cluster.address.startswith("tls://")
    daemon = daemons.start(**dask_env(cluster), WFE_SECRETS_DIR=str(secrets_dir(daemons.root)))
    doc = {
        "name": "tls",
        "nodes": [
            {"id": "e", "type": "echo", "params": {"auth": "{{ secrets.token }}"}},
            {"id": "s", "type": "sleep", "params": {"seconds": 0.05}},
        ],
    }
    drop(daemons.inbox, "tls.json", doc)
    result = wait_result(daemons.outbox, "tls", timeout=30)
    assert result["status"] == "SUCCESS", result
    assert result["nodes"]["e"]["output"] == {"auth": "***"}
    assert {e["worker"] for e in remote_events(daemon)} == {cluster.worker_address("w1")}


@pytest.mark.timeout(120)
def test_a_restarted_daemon_cancels_what_its_earlier_life_left_running(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """A daemon killed (SIGKILL) while remote attempts run leaves them running on the
    workers; restarted, it cancels them before sending its own, and the run finishes."""
    plugin, gate = gate_plugin(daemons.root), daemons.root / "gate"
    cluster = new_dask_cluster(workers=("w1", "w2"), env={"PYTHONPATH": str(plugin)})
    env = {**dask_env(cluster, remote="gate"), "PYTHONPATH": str(plugin)}
    first = daemons.start(**env)
    # The attempts run until the gate opens: they outlast the restart however slow it is.
    drop(daemons.inbox, "twice.json", gated("twice", gate, "x", "y"))
    earlier = attempts_running(cluster, 2)
    first.kill()
    assert {k for found in running_on(cluster).values() for k in found} == earlier
    second = daemons.start(**env)
    [cleaned] = wait_until(lambda: second.events("cluster.cleaned"), 20, "the clean-up")
    assert cleaned["cancelled"] == 2 and set(cleaned["keys"]) == earlier
    running = {k for found in running_on(cluster).values() for k in found}
    assert not running & earlier
    gate.touch()
    result = wait_result(daemons.outbox, "twice", timeout=60)
    assert result["status"] == "SUCCESS"
    wait_free(cluster)


@pytest.mark.timeout(120)
def test_a_reconnect_stops_what_the_lost_connection_left_running(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """A scheduler that stops answering (SIGSTOP) while a remote attempt runs fails that
    attempt; once it answers again the daemon reconnects and cancels the attempt still
    running on the worker before any retry is sent: the node never runs twice at once."""
    cluster = new_dask_cluster(workers=("w1",))
    daemon = daemons.start(**dask_env(cluster))
    drop(daemons.inbox, "blip.json", sleeper("blip", 30, retries=5, retry_delay=1))
    [first] = attempts_running(cluster, 1)
    os.kill(cluster.scheduler_pid, signal.SIGSTOP)
    try:
        [retry] = wait_until(lambda: daemon.events("node.retry"), 40, "the attempt to fail")
    finally:
        os.kill(cluster.scheduler_pid, signal.SIGCONT)
    [cleaned] = wait_until(lambda: daemon.events("cluster.cleaned"), 40, "the clean-up")
    assert retry["error"] == (
        f"lost the connection to the Dask scheduler at {cluster.address} during the attempt"
    )
    assert cleaned["keys"] == [first]
    retried = attempts_running(cluster, 1)
    assert first not in retried


@pytest.mark.timeout(90)
def test_shutdown_cancels_remote_attempts(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """SIGTERM with a remote node running: after the grace the daemon cancels it on the
    worker too, exits 0, and the worker is free (the run resumes at the next start)."""
    cluster = new_dask_cluster(workers=("w1",))
    daemon = daemons.start(**dask_env(cluster), WFE_SHUTDOWN_GRACE="0.2")
    drop(daemons.inbox, "stay.json", sleeper("stay", 30))
    keys = attempts_running(cluster, 1)
    assert daemon.terminate() == 0
    wait_free(cluster, keys)


PYTHON_MODULE = '''
import os


def where(n):
    """Where it ran, and twice ``n``."""
    if n < 0:
        raise ValueError(f"negative: {n}")
    return {"pid": os.getpid(), "twice": 2 * n}
'''


@pytest.mark.timeout(90)
def test_python_nodes_run_on_the_workers(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """``python`` nodes call a function installed on the workers only, in the workers'
    processes; a local node reads their outputs, and an exception reads as locally."""
    cluster = new_dask_cluster(workers=("w1",), env={"WFE_ENABLE_PYTHON": "true"})
    (cluster.module_dir / "wfe_where_mod.py").write_text(PYTHON_MODULE)
    daemon = daemons.start(**dask_env(cluster, remote="python"), WFE_ENABLE_PYTHON="true")
    call = {"function": "wfe_where_mod:where"}
    doc = {
        "name": "py",
        "nodes": [
            *(
                {"id": f"p{n}", "type": "python", "params": {**call, "kwargs": {"n": n}}}
                for n in range(3)
            ),
            {"id": "bad", "type": "python", "params": {**call, "kwargs": {"n": -1}}},
            {
                "id": "sum",
                "type": "echo",
                "depends_on": ["p0", "p1", "p2"],
                "params": {"values": ["{{ p0.twice }}", "{{ p1.twice }}", "{{ p2.twice }}"]},
            },
        ],
    }
    drop(daemons.inbox, "py.json", doc)
    result = wait_result(daemons.outbox, "py", timeout=40)
    nodes = result["nodes"]
    assert result["status"] == "PARTIAL_SUCCESS"
    assert nodes["sum"]["output"] == {"values": [0, 2, 4]}
    assert {nodes[f"p{n}"]["output"]["pid"] for n in range(3)} == {cluster.worker_pid("w1")}
    assert nodes["bad"]["error"] == "ValueError: negative: -1"
    assert daemon.pid not in {nodes[f"p{n}"]["output"]["pid"] for n in range(3)}
