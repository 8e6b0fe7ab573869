"""Tests of ``/metrics`` and ``/healthz``: the real daemon as a subprocess, and parts in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
from wfe_daemon.service.intake import Claimed
from wfe_daemon.service.metrics import Health
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
    daemon = daemons.start(WFE_HTTP_PORT=str(port), PYTHONPROFILEIMPORTTIME="1")
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
    assert "prometheus_client" in daemon.stderr()  # the control for the http_port=0 test


def test_gauges_show_a_running_workflow(daemons: Daemons) -> None:
    """While a workflow sleeps, ``/metrics`` shows one active workflow and one running node;
    the deprecated ``metrics_port`` still turns the server on, with a warning in the log."""
    port = free_port()
    daemon = daemons.start(WFE_METRICS_PORT=str(port))
    (warning,) = [e for e in daemon.events() if e.get("event") == "config.deprecated"]
    assert warning["level"] == "warning" and warning["key"] == "metrics_port"
    drop(daemons.inbox, "slow.json", echo_then_sleep("slow", 3))

    def busy() -> bool:
        samples = scrape(port)
        return (value(samples, "wfe_active_workflows"), value(samples, "wfe_running_nodes")) == (
            1,
            1,
        )

    wait_until(busy, 5, "one active workflow and one running node")


def test_queued_files_count_the_ones_waiting_for_a_workflow_slot(daemons: Daemons) -> None:
    """With one workflow slot and three slow files, ``/metrics`` shows one active workflow
    and two queued files, the one a worker holds until the slot is free among them."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_MAX_CONCURRENT_WORKFLOWS="1")
    for name in ("one", "two", "three"):
        drop(daemons.inbox, f"{name}.json", echo_then_sleep(name, 3))

    def gauges() -> tuple[float, float]:
        samples = scrape(port)
        return value(samples, "wfe_active_workflows"), value(samples, "wfe_queued_files")

    wait_until(lambda: gauges() == (1, 2), 5, "one active workflow and two queued files")


def test_healthz_turns_503_naming_the_store_and_recovers(daemons: Daemons) -> None:
    """``/healthz`` is 200 with every check ok, 503 naming ``store`` while its table is gone or
    the database file is moved away, and 200 again once each is put back."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
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


def test_http_port_zero_serves_nothing_and_imports_no_server(daemons: Daemons) -> None:
    """With ``http_port = 0`` nothing listens, and neither prometheus_client nor the
    server's package is ever imported."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT="0", PYTHONPROFILEIMPORTTIME="1")
    drop(daemons.inbox, "good.json", echo_then_sleep("good", 0.01))
    assert wait_result(daemons.outbox, "good")["status"] == "SUCCESS"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert daemon.terminate() == 0
    assert "import time:" in daemon.stderr()  # importtime works: the check below means something
    assert "prometheus_client" not in daemon.stderr()
    assert "wfe_daemon.web" not in daemon.stderr()
    assert not any(e.get("event") == "http.listening" for e in daemon.events())


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


async def test_the_front_stops_with_its_block(tmp_path: Path) -> None:
    """Leaving ``HttpFront.serving`` closes the port; inside, ``/healthz`` answers and the
    metrics follow the daemon's published results, and stop following them after."""
    from wfe_daemon.config import Settings
    from wfe_daemon.service.daemon import Daemon
    from wfe_daemon.service.systemd import Notifier
    from wfe_daemon.web.front import HttpFront

    port = free_port()
    settings = Settings(db_path=tmp_path / "wfe.db", inbox=tmp_path / "inbox")
    send, receive = anyio.create_memory_object_stream[Claimed](4)
    async with Store.open(settings.db_path) as store:
        daemon = Daemon(settings, None, store, None, Notifier(None))  # type: ignore[arg-type]
        daemon.watching = True
        front = HttpFront(settings, port, None, reads_need_token=False)
        async with front.serving(daemon, send):
            status, body = await anyio.to_thread.run_sync(get, port, "/healthz")
            assert status == 200, body
            assert daemon.on_published == [front.telemetry.metrics.published]
        assert daemon.on_published == []
    send.close()
    receive.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_taken_http_port_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    """An HTTP port already in use ends `run` with exit 2 and one line, not a traceback."""
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
                "WFE_HTTP_PORT": str(port),
                "WFE_INBOX": str(tmp_path / "inbox"),
                "WFE_OUTBOX": str(tmp_path / "outbox"),
                "WFE_DB_PATH": str(tmp_path / "wfe.db"),
                "WFE_DATA_DIR": str(tmp_path / "data"),
            },
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"wfe-daemon: http_port: cannot listen on 127.0.0.1:{port}: ")
