"""The worker side of the Dask executor, driven through a raw ``distributed.Client``
against real ``dask scheduler`` and ``dask worker`` processes (``tests/dask_cluster.py``):
what ``run_attempt``, ``cancel_attempts`` and ``describe`` of
``wfe_daemon.cluster.worker`` do on a worker started with ``--preload``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

import wfe_daemon
from dask_cluster import DaskCluster
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
    """A client of the session's shared cluster."""
    with dask_cluster.client() as client:
        yield client


def test_echo_round_trip(client: Any) -> None:
    """An echo attempt comes back with its params as the output, naming the worker."""
    answer = reply(submit(client, request("echo", {"x": [1, "é"]})))
    assert answer.error is None
    assert json.loads(answer.output_json or "") == {"x": [1, "é"]}
    assert answer.worker in client.scheduler_info()["workers"]


def test_describe_gives_version_and_types(client: Any, dask_cluster: DaskCluster) -> None:
    """Each preloaded worker reports wfe-daemon's version, its sorted types and readiness."""
    described = client.run(worker.describe)
    assert set(described) == {dask_cluster.worker_address(n) for n in ("w1", "w2")}
    for address, info in described.items():
        assert info["address"] == address
        assert info["version"] == wfe_daemon.__version__
        assert info["ready"] is True and info["problem"] is None
        assert info["types"] == sorted(info["types"])
        assert {"echo", "sleep", "shell", "http_get"} <= set(info["types"])


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
    # The worker runs a new attempt at once: its slot was given back.
    assert reply(submit(client, request("echo", {}), workers=[address])).error is None


def test_prefix_cancel_keeps_the_new_life(client: Any) -> None:
    """A cancel by prefix stops the attempts an earlier life of the daemon left, and
    neither those of its new life (``keep``) nor another daemon's."""
    old = [request("sleep", {"seconds": 60}, instance="d", boot="b0") for _ in range(2)]
    new = request("sleep", {"seconds": 60}, instance="d", boot="b1")
    other = request("sleep", {"seconds": 60}, instance="e", boot="b0")
    futures = {a.key: submit(client, a) for a in (*old, new, other)}
    for key in futures:
        wait_running(client, key)
    cancelled = client.run(
        worker.cancel_attempts, prefix=instance_prefix("d"), keep=f"{instance_prefix('d')}b1-"
    )
    assert sorted(itertools.chain(*cancelled.values())) == sorted(a.key for a in old)
    for attempt in old:
        assert (reply(futures[attempt.key]).error or "").startswith("cancelled on worker")
    still = set(itertools.chain(*running(client).values()))
    assert {new.key, other.key} <= still
    client.run(worker.cancel_attempts, keys=[new.key, other.key])
    assert not set(itertools.chain(*running(client).values())) & {new.key, other.key}
