"""The daemon side of the Dask executor, end to end: a real daemon (or ``wfe-daemon
execute``) with ``executor = "dask"`` against real ``dask scheduler`` and ``dask worker``
processes (``tests/dask_cluster.py``), driven through the inbox, the CLI and HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
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


# -- clusters of a test's own: killed, stopped, partial, TLS -------------------------


def worker_of(keys: set[str], cluster: DaskCluster, names: tuple[str, ...]) -> str:
    """The name of the worker running one of ``keys``."""
    running = running_on(cluster)
    for name in names:
        if set(running.get(cluster.worker_address(name), ())) & keys:
            return name
    raise AssertionError(f"no worker of {names} runs {keys}: {running}")


@pytest.mark.timeout(120)
def test_a_killed_worker_is_one_failed_attempt_then_a_retry_elsewhere(
    new_dask_cluster: Callable[..., DaskCluster], daemons: Daemons
) -> None:
    """SIGKILL of the worker running a node's attempt fails that attempt, naming the
    worker; the node's retry runs on the other worker and succeeds (2 attempts)."""
    cluster = new_dask_cluster(workers=("w1", "w2"))
    daemon = daemons.start(**dask_env(cluster))
    drop(daemons.inbox, "k.json", sleeper("k", 3, retries=1, retry_delay=0.1))
    keys = attempts_running(cluster, 1)
    victim = worker_of(keys, cluster, ("w1", "w2"))
    address = cluster.worker_address(victim)
    cluster.kill_worker(victim)
    result = wait_result(daemons.outbox, "k", timeout=40)
    assert result["status"] == "SUCCESS"
    assert result["nodes"]["s"]["attempts"] == 2
    [retry] = daemon.events("node.retry")
    assert retry["error"] == f"worker {address} died during the attempt"
    ran = [(e["attempt"], e["worker"], e["outcome"]) for e in remote_events(daemon)]
    survivor = cluster.worker_address("w2" if victim == "w1" else "w1")
    assert ran == [(1, address, "failure"), (2, survivor, "success")]


PLUGIN = '''
import os
from typing import Any, ClassVar


class WhereTask:
    """Returns where it ran."""

    type: ClassVar[str] = "where"
    display_name: ClassVar[str] = "Where"
    description: ClassVar[str] = "Says where it ran."
    category: ClassVar[str] = "test"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    default_timeout: ClassVar[float | None] = None

    async def execute(self, params, ctx):
        return {"pid": os.getpid(), "n": params["n"]}
'''


def plugin_folder(root: Path) -> Path:
    """A folder holding the ``where`` plugin as an installed distribution."""
    folder = root / "plugin"
    info = folder / "wfe_where_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (folder / "wfe_where_plugin.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wfe-where-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[wfe_daemon.tasks]\nwhere = wfe_where_plugin:WhereTask\n"
    )
    return folder


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
    plugin = plugin_folder(tmp_path)
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
    secrets = daemons.root / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cr3t-value\n")
    daemon = daemons.start(**dask_env(cluster), WFE_SECRETS_DIR=str(secrets))
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
    cluster = new_dask_cluster(workers=("w1", "w2"))
    env = dask_env(cluster)
    first = daemons.start(**env)
    doc = {
        "name": "twice",
        "nodes": [
            {"id": "x", "type": "sleep", "params": {"seconds": 4}},
            {"id": "y", "type": "sleep", "params": {"seconds": 4}},
        ],
    }
    drop(daemons.inbox, "twice.json", doc)
    earlier = attempts_running(cluster, 2)
    first.kill()
    assert {k for found in running_on(cluster).values() for k in found} == earlier
    second = daemons.start(**env)
    [cleaned] = wait_until(lambda: second.events("cluster.cleaned"), 20, "the clean-up")
    assert cleaned["cancelled"] == 2 and set(cleaned["keys"]) == earlier
    running = {k for found in running_on(cluster).values() for k in found}
    assert not running & earlier
    result = wait_result(daemons.outbox, "twice", timeout=30)
    assert result["status"] == "SUCCESS"
    wait_free(cluster)


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
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wfe_daemon", "execute", str(path)],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "wfe_daemon.runtime.engine" in modules
    assert not [m for m in modules if m.startswith(("distributed", "dask", "wfe_daemon.cluster"))]
