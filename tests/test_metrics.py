"""Tests of ``/metrics`` and ``/healthz``: the real daemon as a subprocess, and parts in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_helpers import (
    Daemons,
    drop,
    echo_then_sleep,
    execute,
    free_port,
    get,
    wait_result,
    wait_until,
)
from wfe_daemon.errors import UsageError
from wfe_daemon.faults import Faults
from wfe_daemon.service.intake import Claimed
from wfe_daemon.service.metrics import Followed, Health, Telemetry
from wfe_daemon.store.database import Store

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

FAILING = {
    "name": "half",
    "nodes": [
        {"id": "a", "type": "echo", "params": {}},
        {"id": "b", "type": "sleep", "depends_on": ["a"], "timeout": 0.2, "params": {"seconds": 5}},
    ],
}
CYCLE = {
    "name": "cyclic",
    "nodes": [
        {"id": "a", "type": "echo", "depends_on": ["b"]},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
    ],
}


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, parsed as Prometheus text, by name and labels."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def health(port: int) -> tuple[int, dict[str, Any]]:
    """``/healthz``: the status and the JSON body."""
    status, body = get(port, "/healthz")
    return status, json.loads(body)


def test_metrics_count_runs_nodes_attempts_and_latency(daemons: Daemons) -> None:
    """After a SUCCESS, a PARTIAL_SUCCESS (a node timed out) and a REJECTED file, ``/metrics``
    parses as Prometheus text and its counters and histograms show exactly those runs."""
    port = free_port()
    daemon = daemons.start(WFE_METRICS_PORT=str(port), PYTHONPROFILEIMPORTTIME="1")
    drop(daemons.inbox, "good.json", echo_then_sleep("good", 0.05))
    drop(daemons.inbox, "half.json", FAILING)
    drop(daemons.inbox, "cycle.json", CYCLE)
    assert wait_result(daemons.outbox, "good")["status"] == "SUCCESS"
    assert wait_result(daemons.outbox, "half")["status"] == "PARTIAL_SUCCESS"
    assert wait_result(daemons.outbox, "cycle")["status"] == "REJECTED"

    def settled() -> Samples:  # counted just after each result is written; {} until then
        samples = scrape(port)
        return samples if value(samples, "wfe_intake_latency_seconds_count") == 3 else {}

    samples = wait_until(settled, 5, "three published results in /metrics")
    for status in ("SUCCESS", "PARTIAL_SUCCESS", "REJECTED"):
        assert value(samples, "wfe_runs_finished_total", status=status) == 1
    assert value(samples, "wfe_runs_finished_total", status="FAILED") == 0
    assert value(samples, "wfe_nodes_finished_total", type="echo", status="SUCCESS") == 2
    assert value(samples, "wfe_nodes_finished_total", type="sleep", status="SUCCESS") == 1
    assert value(samples, "wfe_nodes_finished_total", type="sleep", status="FAILED") == 1
    assert value(samples, "wfe_task_attempts_total", type="sleep", outcome="failure") == 1
    assert value(samples, "wfe_task_attempts_total", type="sleep", outcome="success") == 1
    assert value(samples, "wfe_task_duration_seconds_count", type="echo") == 2
    assert value(samples, "wfe_task_duration_seconds_count", type="sleep") == 2
    assert value(samples, "wfe_task_duration_seconds_sum", type="sleep") >= 0.25
    assert value(samples, "wfe_intake_latency_seconds_sum") > 0
    for gauge in ("wfe_active_workflows", "wfe_running_nodes", "wfe_queued_files"):
        assert (gauge, frozenset()) in samples and samples[gauge, frozenset()] == 0
    assert daemon.terminate() == 0
    assert "prometheus_client" in daemon.stderr()  # the control for the metrics_port=0 test


def test_gauges_show_a_running_workflow(daemons: Daemons) -> None:
    """While a workflow sleeps, ``/metrics`` shows one active workflow and one running node."""
    port = free_port()
    daemons.start(WFE_METRICS_PORT=str(port))
    drop(daemons.inbox, "slow.json", echo_then_sleep("slow", 3))

    def busy() -> bool:
        samples = scrape(port)
        return (value(samples, "wfe_active_workflows"), value(samples, "wfe_running_nodes")) == (
            1,
            1,
        )

    wait_until(busy, 5, "one active workflow and one running node")


def test_healthz_turns_503_naming_the_store_and_recovers(daemons: Daemons) -> None:
    """``/healthz`` is 200 with every check ok, 503 naming ``store`` while its table is gone or
    the database file is moved away, and 200 again once each is put back."""
    port = free_port()
    daemons.start(WFE_METRICS_PORT=str(port))
    status, body = health(port)
    assert (status, body) == (
        200,
        {"status": "ok", "checks": {"loop": "ok", "store": "ok", "watcher": "ok"}},
    )

    def failing() -> dict[str, Any]:
        status, body = health(port)
        return body if status == 503 else {}

    def healthy() -> bool:
        return health(port)[0] == 200

    # A query that fails: the heartbeat's query reads a table that no longer exists.
    execute(daemons.db_path, "ALTER TABLE workflowrun RENAME TO workflowrun_away")
    body = wait_until(failing, 5, "/healthz 503 while the table is gone")
    assert body["failing"] == ["store"]
    assert "no such table: workflowrun" in body["checks"]["store"]
    assert body["checks"]["loop"] == body["checks"]["watcher"] == "ok"
    execute(daemons.db_path, "ALTER TABLE workflowrun_away RENAME TO workflowrun")
    wait_until(healthy, 5, "/healthz 200 once the table is back")

    # The file the daemon writes is no longer the one at db_path: history would be lost.
    moved = daemons.db_path.with_name("moved.db")
    os.rename(daemons.db_path, moved)
    body = wait_until(failing, 5, "/healthz 503 while the database file is away")
    assert body["failing"] == ["store"]
    assert "removed or replaced" in body["checks"]["store"]
    os.rename(moved, daemons.db_path)
    wait_until(healthy, 5, "/healthz 200 once the file is back")


def test_metrics_port_zero_serves_nothing_and_imports_no_prometheus(daemons: Daemons) -> None:
    """With ``metrics_port = 0`` nothing listens and prometheus_client is never imported."""
    port = free_port()
    daemon = daemons.start(WFE_METRICS_PORT="0", PYTHONPROFILEIMPORTTIME="1")
    drop(daemons.inbox, "good.json", echo_then_sleep("good", 0.01))
    assert wait_result(daemons.outbox, "good")["status"] == "SUCCESS"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert daemon.terminate() == 0
    assert "import time:" in daemon.stderr()  # importtime works: the check below means something
    assert "prometheus_client" not in daemon.stderr()
    assert not any(e.get("event") == "metrics.listening" for e in daemon.events())


def test_health_names_a_stalled_loop_and_a_stopped_watcher() -> None:
    """A heartbeat older than 5 s fails ``loop``; intake not running fails ``watcher``."""
    now = [100.0]
    facts = Health(clock=lambda: now[0], store_problem=None, watching=lambda: True)
    assert facts.report()[1]["failing"] == ["loop"]  # no heartbeat yet
    facts.beat_at = 99.0
    assert facts.report() == (
        True,
        {"status": "ok", "checks": {"loop": "ok", "store": "ok", "watcher": "ok"}},
    )
    now[0] = 106.0
    facts.watching = lambda: False
    ok, body = facts.report()
    assert not ok
    assert body["failing"] == ["loop", "watcher"]
    assert body["checks"] == {
        "loop": "no heartbeat for 7.0s",
        "store": "ok",
        "watcher": "intake is not running",
    }


def _fake_daemon(store: Store, db_path: Path) -> Followed:
    """What :meth:`Telemetry.run` reads of a daemon: no workflow running, intake alive."""
    return Followed(
        store=store,
        db_path=db_path,
        active=lambda: 0,
        watching=lambda: True,
        faults=Faults().active,
        on_published=[],
    )


async def test_server_stops_with_its_task_and_leaves_no_thread(tmp_path: Path) -> None:
    """Cancelling ``Telemetry.run`` shuts the HTTP server down and joins its thread."""
    db_path = tmp_path / "wfe.db"
    port = free_port()
    send, receive = anyio.create_memory_object_stream[Claimed](4)
    async with Store.open(db_path) as store, anyio.create_task_group() as tg:
        telemetry = Telemetry(port)
        daemon = _fake_daemon(store, db_path)
        await tg.start(telemetry.run, daemon, send)
        assert "wfe-metrics-http" in {t.name for t in threading.enumerate()}
        status, body = await anyio.to_thread.run_sync(get, port, "/healthz")
        assert status == 200, body
        assert await anyio.to_thread.run_sync(get, port, "/other") == (
            404,
            b'{"error": "not found"}',
        )
        assert daemon.on_published == [telemetry.metrics.published]
        tg.cancel_scope.cancel()
    send.close()
    receive.close()
    assert "wfe-metrics-http" not in {t.name for t in threading.enumerate()}
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


async def test_a_taken_port_is_a_usage_error(tmp_path: Path) -> None:
    """A metrics port already in use stops start-up with a one-line error naming the key."""
    db_path = tmp_path / "wfe.db"
    send, receive = anyio.create_memory_object_stream[Claimed](4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with Store.open(db_path) as store:
            with pytest.raises(UsageError, match=rf"^metrics_port: cannot listen on .*:{port}"):
                await Telemetry(port).run(_fake_daemon(store, db_path), send)
    send.close()
    receive.close()


def test_taken_metrics_port_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    """A metrics port already in use ends `run` with exit 2 and one line, not a traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "wfe_daemon", "run"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env={
                **os.environ,
                "WFE_METRICS_PORT": str(port),
                "WFE_INBOX": str(tmp_path / "inbox"),
                "WFE_OUTBOX": str(tmp_path / "outbox"),
                "WFE_DB_PATH": str(tmp_path / "wfe.db"),
                "WFE_DATA_DIR": str(tmp_path / "data"),
            },
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "metrics_port" in line
