"""The worker side of the Dask executor, driven through a raw ``distributed.Client``
against real ``dask scheduler`` and ``dask worker`` processes (``tests/dask_cluster.py``):
what ``run_attempt``, ``cancel_attempts`` and ``describe`` of
``wfe_daemon.cluster.worker`` do on a worker started with ``--preload``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wfe_daemon
from daemon_helpers import wait_until
from dask_cluster import DaskCluster, dask_cluster_at
from dask_daemon_helpers import plugin_folder
from wfe_daemon.cluster import worker
from wfe_daemon.cluster.wire import AttemptReply, AttemptRequest, attempt_key, instance_prefix

_runs = itertools.count(1)


def request(task_type: str, params: Any, *, timeout: float = 30.0, **key: Any) -> AttemptRequest:
    """An attempt of a one-node run, with a key of daemon ``key["instance"]`` (default
    ``test``), life ``key["boot"]`` (default ``b1``)."""
    run_id = next(_runs)
    node_id = f"n{run_id}"
    return AttemptRequest(
        key=attempt_key(key.get("instance", "test"), key.get("boot", "b1"), run_id, node_id, 1),
        task_type=task_type,
        params=params,
        run_id=run_id,
        workflow="wf",
        node_id=node_id,
        attempt=1,
        timeout=timeout,
    )


def submit(client: Any, attempt: AttemptRequest, **options: Any) -> Any:
    """Submit ``attempt`` as the daemon does: its own key, ``pure=False``, no retries."""
    return client.submit(
        worker.run_attempt, attempt.to_json(), key=attempt.key, pure=False, **options
    )


def reply(future: Any) -> AttemptReply:
    """The attempt's reply, once it ends."""
    return AttemptReply.from_json(future.result(timeout=30))


def running(client: Any) -> dict[str, list[str]]:
    """The attempts running on each worker, by worker address."""
    return {address: info["running"] for address, info in client.run(worker.describe).items()}


def wait_running(client: Any, key: str) -> str:
    """Wait until attempt ``key`` runs on some worker; that worker's address."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for address, keys in running(client).items():
            if key in keys:
                return address
        time.sleep(0.02)
    raise AssertionError(f"attempt {key} never ran")


@pytest.fixture
def client(dask_cluster: DaskCluster) -> Iterator[Any]:
    """A client of the package's shared cluster."""
    with dask_cluster.client() as client:
        yield client


def test_echo_round_trip(client: Any) -> None:
    """An echo attempt comes back with its params as the output, naming the worker."""
    answer = reply(submit(client, request("echo", {"x": [1, "é"]})))
    assert answer.error is None
    assert json.loads(answer.output_json or "") == {"x": [1, "é"]}
    assert answer.worker in client.scheduler_info()["workers"]


def test_describe_gives_version_and_types(client: Any, dask_cluster: DaskCluster) -> None:
    """Each preloaded worker reports wfe-daemon's version, its sorted types and readiness,
    and said in its log when it was ready."""
    described = client.run(worker.describe)
    assert set(described) == {dask_cluster.worker_address(n) for n in ("w1", "w2")}
    for address, info in described.items():
        assert info["address"] == address
        assert info["version"] == wfe_daemon.__version__
        assert info["ready"] is True and info["problem"] is None
        assert info["types"] == sorted(info["types"])
        assert {"echo", "sleep", "shell", "http_get"} <= set(info["types"])
    ready = f"wfe-daemon {wfe_daemon.__version__} worker ready: {len(info['types'])} task types"
    assert all(ready in dask_cluster.log(name) for name in ("w1", "w2"))


def test_params_checked_against_the_workers_schema(client: Any) -> None:
    """Params that fail the task type's schema on the worker fail the attempt, worded as
    the engine words a params error."""
    answer = reply(submit(client, request("sleep", {"seconds": "long"})))
    assert answer.error == "params: seconds: 'long' is not of type 'number'"


_SECRET = "tok-9f27c1e4-never-logged"
_GOOD = json.loads(request("echo", {"token": _SECRET}).to_json())
ODD_REQUESTS = {
    "not JSON": ("{", "cannot read the attempt request: not JSON"),
    "a list": ("[]", "not a JSON object but list"),
    "unknown field": (json.dumps({**_GOOD, "extra": 1}), "unknown request fields ['extra']"),
    "missing field": (
        json.dumps({k: v for k, v in _GOOD.items() if k != "timeout"}),
        "request fields missing: ['timeout']",
    ),
    "timeout a string": (
        json.dumps({**_GOOD, "timeout": "5"}),
        "request field 'timeout' is not a number",
    ),
    "timeout negative": (
        json.dumps({**_GOOD, "timeout": -1}),
        "request field 'timeout' is -1, not a positive number",
    ),
    "task_type a list": (
        json.dumps({**_GOOD, "task_type": ["echo"]}),
        "request field 'task_type' is not a string",
    ),
    "attempt a bool": (
        json.dumps({**_GOOD, "attempt": True}),
        "request field 'attempt' is not an integer",
    ),
}
"""Requests a worker cannot read, each with what its reply says."""


@pytest.mark.parametrize("name", sorted(ODD_REQUESTS))
def test_odd_request_gets_a_reply(client: Any, dask_cluster: DaskCluster, name: str) -> None:
    """A request the worker cannot read is answered with an error naming the problem (dask
    itself sees no failure, so its log never quotes the params), and the worker goes on."""
    data, expected = ODD_REQUESTS[name]
    future = client.submit(worker.run_attempt, data, key=f"odd-{name}-{next(_runs)}", pure=False)
    answer = reply(future)
    assert answer.output_json is None
    assert answer.error is not None and answer.error.startswith(f"worker {answer.worker}: ")
    assert expected in answer.error
    assert _SECRET not in answer.error
    assert not any(_SECRET in dask_cluster.log(name) for name in ("w1", "w2"))
    assert reply(submit(client, request("echo", {}), workers=[answer.worker])).error is None


def test_timeout_on_the_worker(client: Any) -> None:
    """An attempt past its timeout replies ``timed_out`` with the engine's wording, and
    nothing of it runs on the worker afterwards."""
    attempt = request("sleep", {"seconds": 30}, timeout=0.3)
    answer = reply(submit(client, attempt))
    assert answer.timed_out is True
    assert answer.error == "timed out after 0.3s"
    assert answer.output_json is None
    assert all(attempt.key not in keys for keys in running(client).values())


def test_cancel_by_key_frees_the_slot(client: Any) -> None:
    """A cancel by key stops a long sleep at once, its reply says so, and the slot is free."""
    attempt = request("sleep", {"seconds": 60})
    future = submit(client, attempt)
    address = wait_running(client, attempt.key)
    cancelled = client.run(worker.cancel_attempts, keys=[attempt.key])
    assert cancelled == {a: ([attempt.key] if a == address else []) for a in cancelled}
    answer = reply(future)
    assert answer.error == f"cancelled on worker {address}"
    assert running(client)[address] == []
    # Dask's own view: the worker no longer holds a slot for it, and runs another at once.
    assert attempt.key not in client.processing()[address]
    assert reply(submit(client, request("echo", {}), workers=[address])).error is None


def test_prefix_cancel_keeps_the_new_life(client: Any) -> None:
    """A cancel by prefix stops the attempts an earlier life of the daemon left, and
    neither those of its new life (``keep``) nor another daemon's."""
    old = [request("sleep", {"seconds": 60}, instance="wtd", boot="b0") for _ in range(2)]
    new = request("sleep", {"seconds": 60}, instance="wtd", boot="b1")
    other = request("sleep", {"seconds": 60}, instance="wte", boot="b0")
    futures = {a.key: submit(client, a) for a in (*old, new, other)}
    for key in futures:
        wait_running(client, key)
    cancelled = client.run(
        worker.cancel_attempts, prefix=instance_prefix("wtd"), keep=f"{instance_prefix('wtd')}b1-"
    )
    assert sorted(itertools.chain(*cancelled.values())) == sorted(a.key for a in old)
    for attempt in old:
        assert (reply(futures[attempt.key]).error or "").startswith("cancelled on worker")
    still = set(itertools.chain(*running(client).values()))
    assert {new.key, other.key} <= still
    client.run(worker.cancel_attempts, keys=[new.key, other.key])
    assert not set(itertools.chain(*running(client).values())) & {new.key, other.key}


# -- workers that differ: a plugin on one only, no preload, a bad configuration ----------

BOOM = """
if params["kind"] == "failed":
    raise TaskFailed(f"no luck with {params['url']}")
if params["kind"] == "value":
    raise ValueError(f"bad value from {params['url']}")
if params["kind"] == "exit":
    raise SystemExit(f"gave up on {params['url']}")
if params["kind"] == "cancelled":
    raise asyncio.CancelledError  # of its own: nothing cancelled it
return {"values": [1, float("nan")]}
"""
"""The body of the ``boom`` task's ``execute``."""

URL = "https://user:hunter2@example.invalid/x?token=abc&page=2"
"""Quoted by the errors: its password and token must read ``***`` wherever it ran."""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the ``boom`` plugin as an installed distribution: its module and a
    ``*.dist-info`` with ``entry_points.txt`` (what ``importlib.metadata`` finds on the path)."""
    doc = 'Fails the way ``params["kind"]`` says, or returns what JSON cannot carry.'
    imports = "import asyncio\nfrom wfe_daemon import TaskFailed"
    return plugin_folder(tmp_path_factory.mktemp("plugin"), "boom", doc, BOOM, imports)


@pytest.fixture(scope="module")
def odd_cluster(tmp_path_factory: pytest.TempPathFactory, plugin_dir: Path) -> Iterator[Any]:
    """A cluster of four different workers: ``plugged`` has the plugin (and the shell task
    and a small ``max_output_size``), ``plain`` has neither, ``bare`` was started without
    the preload, ``broken`` has a bad setting."""
    workers = {
        "plugged": {
            "env": {
                "PYTHONPATH": str(plugin_dir),
                "WFE_ENABLE_SHELL": "true",
                "WFE_MAX_OUTPUT_SIZE": "1000",
            }
        },
        "plain": {},
        "bare": {"preload": False},
        "broken": {"env": {"WFE_MAX_CONCURRENT_TASKS": "-3"}},
    }
    with (
        dask_cluster_at(tmp_path_factory.mktemp("odd"), workers=workers, nthreads=2) as cluster,
        cluster.client() as client,
    ):
        yield cluster, client


def on(cluster: DaskCluster, name: str) -> dict[str, Any]:
    """Submit options that send an attempt to worker ``name`` only."""
    return {"workers": [cluster.worker_address(name)], "allow_other_workers": False}


FAILING_NODES = {
    "failed": ("boom", {"kind": "failed", "url": URL}, None),
    "value": ("boom", {"kind": "value", "url": URL}, None),
    "nan": ("boom", {"kind": "nan"}, None),
    "cancelled": ("boom", {"kind": "cancelled"}, None),
    "big": ("echo", {"text": "x" * 2000}, None),
    "slow": ("sleep", {"seconds": 30}, 0.3),
}
"""Nodes that fail, by id: type, params and timeout (each fails its own way)."""


def test_errors_read_as_in_a_local_run(
    odd_cluster: Any,
    plugin_dir: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_workflow: Callable[..., Path],
) -> None:
    """A task's failure, an exception of another type, a ``CancelledError`` it raised itself,
    an output JSON cannot carry, one over ``max_output_size`` and a timeout read the same
    on the worker as through ``wfe-daemon execute`` with the same plugin and settings, URL
    secrets hidden."""
    cluster, client = odd_cluster
    nodes = [
        {"id": id_, "type": type_, "params": params, **({"timeout": t} if t else {})}
        for id_, (type_, params, t) in FAILING_NODES.items()
    ]
    path = write_workflow({"name": "failing", "nodes": nodes})
    done = run_cli(
        "execute", path, env={"PYTHONPATH": str(plugin_dir), "WFE_MAX_OUTPUT_SIZE": "1000"}
    )
    assert done.returncode == 1, done.stderr
    local = {id_: node["error"] for id_, node in json.loads(done.stdout)["nodes"].items()}
    futures = {
        id_: submit(client, request(type_, params, timeout=t or 30), **on(cluster, "plugged"))
        for id_, (type_, params, t) in FAILING_NODES.items()
    }
    remote = {id_: reply(future) for id_, future in futures.items()}
    assert {id_: answer.error for id_, answer in remote.items()} == local
    assert [id_ for id_, answer in remote.items() if answer.timed_out] == ["slow"]
    assert "hunter2" not in json.dumps(local) and "token=abc" not in json.dumps(local)
    assert "ValueError" in (remote["value"].traceback or "")
    assert "hunter2" not in (remote["value"].traceback or "")
    assert "token=***" in (remote["value"].traceback or "")


def test_task_exiting_fails_only_its_attempt(odd_cluster: Any) -> None:
    """A task raising ``SystemExit`` fails its attempt with the exception's type and
    message (URL secrets hidden); the worker goes on running attempts."""
    cluster, client = odd_cluster
    answer = reply(
        submit(client, request("boom", {"kind": "exit", "url": URL}), **on(cluster, "plugged"))
    )
    assert answer.error == "SystemExit: gave up on https://***@example.invalid/x?token=***&page=2"
    assert answer.timed_out is False
    assert reply(submit(client, request("echo", {}), **on(cluster, "plugged"))).error is None


def test_worker_without_the_preload(odd_cluster: Any) -> None:
    """A worker started without the preload says so, to ``describe`` and to any attempt."""
    cluster, client = odd_cluster
    address = cluster.worker_address("bare")
    info = client.run(worker.describe, workers=[address])[address]
    assert info["ready"] is False and info["types"] == []
    assert info["problem"] == "not started with --preload wfe_daemon.cluster.worker"
    answer = reply(submit(client, request("echo", {}), **on(cluster, "bare")))
    assert answer.error == (
        f"worker {address}: was not started with --preload wfe_daemon.cluster.worker;"
        " restart it with that option"
    )
    assert answer.worker == address


def test_worker_lacking_a_plugin_type(odd_cluster: Any) -> None:
    """Only the worker with the plugin lists its type; the other answers an attempt of it
    with an error naming itself and what to install."""
    cluster, client = odd_cluster
    plugged, plain = cluster.worker_address("plugged"), cluster.worker_address("plain")
    described = client.run(worker.describe, workers=[plugged, plain])
    assert set(described[plugged]["types"]) - set(described[plain]["types"]) == {"boom"}
    answer = reply(
        submit(client, request("boom", {"kind": "failed", "url": "x"}), **on(cluster, "plain"))
    )
    assert answer.error == (
        f"worker {plain}: no task type 'boom' here;"
        " install the plugin that provides it on every worker"
    )


def test_worker_with_a_bad_setting(odd_cluster: Any) -> None:
    """A worker whose settings are wrong starts, lists no types, and answers every attempt
    with the problem (naming the variable) instead of running half-configured."""
    cluster, client = odd_cluster
    address = cluster.worker_address("broken")
    info = client.run(worker.describe, workers=[address])[address]
    problem = "config: WFE_MAX_CONCURRENT_TASKS: must be >= 1, got -3"
    assert info["ready"] is False and info["types"] == [] and info["problem"] == problem
    answer = reply(submit(client, request("echo", {}), **on(cluster, "broken")))
    assert answer.error == (
        f"worker {address}: cannot run attempts: {problem}; fix its configuration and restart it"
    )
    assert "cannot run attempts" in cluster.log("broken")


def test_worker_uses_its_own_settings(odd_cluster: Any) -> None:
    """Each worker runs with its own settings: the shell task runs where the worker enables
    it, in that worker's own ``data_dir``, and is refused where it does not."""
    cluster, client = odd_cluster
    shell = request("shell", {"argv": ["pwd"]})
    answer = reply(submit(client, shell, **on(cluster, "plugged")))
    assert answer.error is None
    output = json.loads(answer.output_json or "")
    assert output["stdout"].strip() == str(cluster.root / "worker-plugged" / "data")
    refused = reply(submit(client, request("shell", {"argv": ["pwd"]}), **on(cluster, "plain")))
    assert (refused.error or "").startswith("the shell task is disabled")


def children(pid: int) -> list[int]:
    """The pids of the child processes of ``pid``, from ``/proc``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_timeout_leaves_no_process_on_the_worker(odd_cluster: Any) -> None:
    """A ``shell`` attempt past its timeout on the worker ends with its program: the
    worker has no child process left once the reply is in."""
    cluster, client = odd_cluster
    attempt = request("shell", {"argv": ["sleep", "30"]}, timeout=0.5)
    future = submit(client, attempt, **on(cluster, "plugged"))
    pid = cluster.worker_pid("plugged")
    wait_until(lambda: children(pid), 20, "the program to start on the worker")
    answer = reply(future)
    assert answer.timed_out is True, answer.error
    assert children(pid) == []


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_lost_worker_fails_the_attempt_once(odd_cluster: Any, end: str) -> None:
    """A worker killed (SIGKILL) or stopped (SIGTERM: it cancels its attempts and exits)
    mid-attempt fails the attempt at once (``allowed-failures: 0``): it is not run again
    on another worker behind the daemon's back."""
    from distributed import KilledWorker

    cluster, client = odd_cluster
    cluster.start_worker("victim", nthreads=1)
    attempt = request("sleep", {"seconds": 60})
    future = submit(client, attempt, **on(cluster, "victim"))
    wait_running(client, attempt.key)
    if end == "kill":
        cluster.kill_worker("victim")
    else:
        assert cluster.stop_worker("victim") == 0
        assert "Run preload teardown" in cluster.log("victim")
    with pytest.raises(KilledWorker):
        future.result(timeout=20)
    assert all(attempt.key not in keys for keys in running(client).values())


@pytest.mark.timeout(90)
def test_tls_cluster(new_dask_cluster: Callable[..., DaskCluster]) -> None:
    """Over TLS with temporary certificates, attempts run and come back as over TCP."""
    cluster = new_dask_cluster(workers=["t1"], nthreads=2, tls=True)
    assert cluster.address.startswith("tls://127.0.0.1:")
    assert cluster.tls is not None and cluster.tls.ca_file.exists()
    with cluster.client() as client:
        answer = reply(submit(client, request("echo", {"secret": "s3"})))
        assert answer.worker == cluster.worker_address("t1")
        assert answer.worker.startswith("tls://")
        assert json.loads(answer.output_json or "") == {"secret": "s3"}


@pytest.mark.timeout(90)
def test_cluster_restarts_after_its_scheduler_died(
    new_dask_cluster: Callable[..., DaskCluster],
) -> None:
    """The test cluster comes back on the same address after its scheduler was killed (its
    workers exit with it), with the same workers, which run attempts again."""
    cluster = new_dask_cluster(workers={"r1": {"env": {"WFE_MAX_OUTPUT_SIZE": "10"}}})
    address = cluster.address
    cluster.stop_scheduler(kill=True)
    cluster.restart()
    assert cluster.address == address
    with cluster.client() as client:
        answer = reply(submit(client, request("echo", {"text": "more than ten bytes"})))
    assert answer.worker == cluster.worker_address("r1")
    assert answer.error == "output is 30 bytes, over max_output_size 10"
