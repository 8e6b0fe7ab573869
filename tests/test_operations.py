"""Tests of operating the service: cancel requests, retries and history retention."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from daemon_helpers import (
    Daemons,
    drop,
    echo_doc,
    execute,
    query,
    results,
    wait_result,
    wait_running,
    wait_until,
)
from wfe_daemon.errors import StoreError, TaskFailed, WorkflowRejected
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.task import Params, TaskContext
from wfe_daemon.service.cancel import request_cancel
from wfe_daemon.service.retention import prune_history
from wfe_daemon.service.retry import retry_run
from wfe_daemon.service.submission import submit

LONG = {
    "name": "long",
    "nodes": [
        {"id": "first", "type": "echo", "params": {"n": 1}},
        {"id": "nap", "type": "sleep", "depends_on": ["first"], "params": {"seconds": 30}},
        {"id": "after", "type": "echo", "depends_on": ["nap"], "params": {"n": 2}},
        {"id": "last", "type": "echo", "depends_on": ["after"], "params": {"n": 3}},
    ],
}


async def _submit(engine: Engine, data: bytes, source: str) -> dict[str, Any]:
    """Submit ``data`` as the file ``source`` through ``engine`` and its registry and store."""
    return await submit(
        data, registry=engine.registry, store=engine.store, engine=engine, source=source
    )


async def _retry(engine: Engine, run_id: int) -> dict[str, Any]:
    """Retry run ``run_id`` on ``engine``, with the engine's settings, registry and store."""
    return await retry_run(
        run_id,
        settings=engine.settings,
        registry=engine.registry,
        store=engine.store,
        engine=engine,
    )


# -- cancel --------------------------------------------------------------------------------------


def test_cancel_from_the_cli_ends_a_long_daemon_run_cancelled_at_once(
    daemons: Daemons, run_cli: Callable[..., Any]
) -> None:
    """`cancel RUN_ID` makes a run sleeping 30 s end CANCELLED within moments, with one result:
    the sleeping node CANCELLED, its dependents SKIPPED."""
    daemons.start()
    drop(daemons.inbox, "long.json", LONG)
    run_id = wait_running(daemons.db_path, "nap")
    done = run_cli("cancel", run_id)
    requested = datetime.now(UTC)  # the request is committed once the command has exited
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cancel requested for run {run_id}"
    # Far sooner than the nap's 30 s (a cancel is seen within 0.25 s): bounds that leave
    # room for a machine whose cores other tests share.
    result = wait_result(daemons.outbox, "long", timeout=15)
    assert result["status"] == "CANCELLED"
    nodes = result["nodes"]
    assert nodes["first"]["status"] == "SUCCESS"
    assert nodes["nap"]["status"] == "CANCELLED"
    assert "cancelled" in nodes["nap"]["error"]
    for skipped in ("after", "last"):
        assert nodes[skipped]["status"] == "SKIPPED"
        assert "cancelled" in nodes[skipped]["reason"]
    wait_until(
        lambda: not query(daemons.db_path, "SELECT * FROM cancel_request"),
        5,
        "the request row to be deleted",
    )
    [run] = query(
        daemons.db_path, "SELECT status, finished_at FROM workflowrun WHERE id = ?", run_id
    )
    assert run["status"] == "CANCELLED"
    reaction = datetime.fromisoformat(run["finished_at"]) - requested
    assert reaction.total_seconds() < 15, reaction  # ended by the cancel, not by the nap
    time.sleep(0.3)  # a second result would be written right after the first
    assert [p.name for p in results(daemons.outbox)] == ["long.result.json"]


def test_cancel_of_an_unknown_or_finished_run_exits_1_with_one_line(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """Cancelling a finished or unknown run fails with exit 1 and one line; a non-number is a
    usage error (exit 2)."""
    assert run_cli("execute", write_workflow(echo_doc("quick"))).returncode == 0
    finished = run_cli("cancel", "1")
    assert finished.returncode == 1
    assert finished.stderr.strip().splitlines() == [
        "wfe-daemon: run 1 is not running (it is SUCCESS): nothing to cancel"
    ]
    unknown = run_cli("cancel", "99")
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "wfe-daemon: no run 99")
    assert run_cli("cancel", "seven").returncode == 2


def test_cancel_requested_while_the_daemon_is_down_applies_at_the_next_start(
    daemons: Daemons, run_cli: Callable[..., Any]
) -> None:
    """A cancel for a run whose daemon was killed waits in the table, and the next daemon
    start resumes the run straight to CANCELLED (not another 30 s sleep)."""
    first = daemons.start()
    drop(daemons.inbox, "long.json", LONG)
    run_id = wait_running(daemons.db_path, "nap")
    first.kill()
    done = run_cli("cancel", run_id)
    assert done.returncode == 0, done.stderr
    assert "applied when the run resumes" in done.stdout
    assert query(daemons.db_path, "SELECT run_id FROM cancel_request") == [{"run_id": run_id}]
    daemons.start()
    result = wait_result(daemons.outbox, "long", timeout=10)
    assert result["status"] == "CANCELLED"
    assert result["nodes"]["first"]["status"] == "SUCCESS"
    assert all(result["nodes"][n]["status"] == "SKIPPED" for n in ("nap", "after", "last"))
    assert query(daemons.db_path, "SELECT * FROM cancel_request") == []


def test_cancel_reaches_a_run_of_a_live_execute_process(
    tmp_path: Path,
    cli_env: dict[str, str],
    db_path: Path,
    run_cli: Callable[..., Any],
    write_workflow: Callable[..., Path],
) -> None:
    """`cancel` also stops a run that `wfe-daemon execute` runs: it prints the CANCELLED
    summary and exits 1."""
    path = write_workflow(LONG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfe_daemon", "execute", str(path)],
        cwd=tmp_path,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = wait_running(db_path, "nap")
        assert run_cli("cancel", run_id).returncode == 0
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    summary = json.loads(out)
    assert (summary["run_id"], summary["status"]) == (run_id, "CANCELLED")
    assert summary["nodes"]["nap"]["status"] == "CANCELLED"


class BlockTask:
    """Blocks a worker thread for ``params["seconds"]`` (a task that cannot be interrupted)."""

    type: ClassVar[str] = "block"
    display_name: ClassVar[str] = "Block"
    description: ClassVar[str] = "A task type that exists only in tests."
    category: ClassVar[str] = "test"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    default_timeout: ClassVar[float | None] = None

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        await asyncio.to_thread(time.sleep, params["seconds"])
        return {}


async def test_cancel_is_prompt_for_threads_and_gives_every_slot_back(
    engine_factory: Callable[..., Engine], sql: Callable[..., list[dict[str, Any]]]
) -> None:
    """Engine.cancel ends a run at once even while a node blocks a thread, skips the node still
    waiting for a slot, and leaves every slot free for the next run."""
    engine = engine_factory(BlockTask(), max_concurrent_tasks=2)
    doc = {
        "name": "busy",
        "nodes": [
            {"id": "blk", "type": "block", "params": {"seconds": 1.5}},
            {"id": "nap", "type": "sleep", "params": {"seconds": 30}},
            {"id": "queued", "type": "sleep", "params": {"seconds": 30}},
            {"id": "dep", "type": "echo", "depends_on": ["nap"], "params": {}},
        ],
    }
    running = asyncio.create_task(_submit(engine, json.dumps(doc).encode(), "busy.json"))
    for _ in range(200):
        if len(sql("SELECT 1 FROM noderun WHERE status = 'RUNNING'")) == 2:
            break
        await asyncio.sleep(0.01)
    [run_id] = engine.active_runs
    started = time.monotonic()
    assert engine.cancel(run_id) is True
    summary = await running
    assert time.monotonic() - started < 1.0
    statuses = {node: entry["status"] for node, entry in summary["nodes"].items()}
    assert statuses == {
        "blk": "CANCELLED",
        "nap": "CANCELLED",
        "queued": "SKIPPED",
        "dep": "SKIPPED",
    }
    assert summary["status"] == "CANCELLED"
    assert engine.slots._value == 2
    assert engine.active_runs == {}
    assert engine.cancel(run_id) is False


async def test_request_cancel_refuses_what_is_not_running(
    engine_factory: Callable[..., Engine],
) -> None:
    """request_cancel raises StoreError for an unknown run and for a finished one."""
    engine = engine_factory()
    summary = await _submit(engine, json.dumps(echo_doc()).encode(), "w.json")
    with pytest.raises(StoreError, match="no run 42"):
        await request_cancel(engine.store, 42)
    with pytest.raises(StoreError, match="not running"):
        await request_cancel(engine.store, summary["run_id"])


# -- retry ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    calls: Counter[str]
    status: dict[str, int]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.calls[self.path] += 1
        status = self.server.status.get(self.path, 404)
        body = json.dumps({"path": self.path, "call": self.server.calls[self.path]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def http_server() -> Iterator[_Server]:
    """A threaded HTTP server on 127.0.0.1 counting calls per path; ``status`` sets answers."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.calls, server.status = Counter(), {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_retry_after_fixing_the_input_reruns_only_what_failed(
    http_server: _Server,
    run_cli: Callable[..., Any],
    write_workflow: Callable[..., Path],
    sql: Callable[..., list[dict[str, Any]]],
) -> None:
    """`retry` of a PARTIAL_SUCCESS run calls only the failed URL again, reuses the outputs of
    what succeeded, ends SUCCESS and links to the original run."""
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    http_server.status.update({"/a": 200, "/b": 500})
    path = write_workflow(
        {
            "name": "two branches",
            "nodes": [
                {"id": "a", "type": "http_get", "params": {"url": f"{base}/a"}},
                {
                    "id": "c",
                    "type": "echo",
                    "depends_on": ["a"],
                    "params": {"got": "{{ a.json.call }}"},
                },
                {"id": "b", "type": "http_get", "params": {"url": f"{base}/b"}},
                {"id": "d", "type": "echo", "depends_on": ["b"], "params": {"got": "{{ b.json }}"}},
            ],
        }
    )
    first = run_cli("execute", path)
    assert first.returncode == 1, first.stderr
    original = json.loads(first.stdout)
    assert original["status"] == "PARTIAL_SUCCESS"
    assert original["nodes"]["d"]["status"] == "SKIPPED"

    http_server.status["/b"] = 200
    second = run_cli("retry", original["run_id"])
    assert second.returncode == 0, second.stderr
    retried = json.loads(second.stdout)
    assert retried["status"] == "SUCCESS"
    assert retried["retry_of"] == original["run_id"]
    assert retried["run_id"] != original["run_id"]
    assert http_server.calls == {"/a": 1, "/b": 2}
    for reused in ("a", "c"):
        assert retried["nodes"][reused]["output"] == original["nodes"][reused]["output"]
        assert retried["nodes"][reused]["reason"] == f"output reused from run {original['run_id']}"
    assert retried["nodes"]["d"]["output"] == {"got": {"path": "/b", "call": 2}}
    [row] = sql(
        "SELECT retry_of, status, result_summary FROM workflowrun WHERE id = ?", retried["run_id"]
    )
    assert (row["retry_of"], row["status"]) == (original["run_id"], "SUCCESS")
    assert json.loads(row["result_summary"])["retry_of"] == original["run_id"]
    stored = {
        r["node_id"]: r
        for r in sql(
            "SELECT node_id, status, result_data FROM noderun WHERE workflow_id = ?",
            retried["run_id"],
        )
    }
    assert json.loads(stored["a"]["result_data"]) == original["nodes"]["a"]["output"]


def test_retry_refuses_a_run_that_never_ran(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """`retry` of a REJECTED run or an unknown one fails with exit 1 and one line."""
    assert run_cli("execute", write_workflow(b"{not json")).returncode == 2
    rejected = run_cli("retry", "1")
    assert rejected.returncode == 1
    assert len(rejected.stderr.strip().splitlines()) == 1
    assert "REJECTED" in rejected.stderr
    assert run_cli("retry", "5").returncode == 1


class RecordTask:
    """Records the params of every call; fails the first one."""

    type: ClassVar[str] = "record"
    display_name: ClassVar[str] = "Record"
    description: ClassVar[str] = "A task type that exists only in tests."
    category: ClassVar[str] = "test"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    default_timeout: ClassVar[float | None] = None

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        self.calls.append(params)
        if len(self.calls) == 1:
            raise TaskFailed("first call fails")
        return {"ok": True}


async def test_retry_of_redacted_secrets_uses_the_original_file_or_refuses(
    engine_factory: Callable[..., Engine], tmp_path: Path
) -> None:
    """A retry finds the original file in inbox/processed/ to get the secrets the database
    redacted; without that file it refuses rather than send "***"."""
    record = RecordTask()
    engine = engine_factory(record)
    doc = {
        "name": "secret",
        "idempotency_key": "k1",
        "nodes": [{"id": "r", "type": "record", "params": {"api_token": "s3cret"}}],
    }
    data = json.dumps(doc).encode()
    first = await _submit(engine, data, "secret.json")
    assert first["status"] == "FAILED"
    with pytest.raises(WorkflowRejected, match="redacted"):
        await _retry(engine, first["run_id"])
    processed = tmp_path / "inbox" / "processed"
    processed.mkdir(parents=True)
    (processed / "secret.json").write_bytes(json.dumps({**doc, "name": "other"}).encode())
    (processed / "secret.1a2b.json").write_bytes(data)
    summary = await _retry(engine, first["run_id"])
    assert summary["status"] == "SUCCESS"
    assert summary["retry_of"] == first["run_id"]
    assert record.calls[-1] == {"api_token": "s3cret"}
    run = await engine.store.get_run(summary["run_id"])
    assert run is not None
    assert run["idempotency_key"] == "k1"  # the FAILED original no longer held it
    assert run["definition"]["nodes"][0]["params"]["api_token"] == "***"


async def test_retry_refuses_a_running_run(engine_factory: Callable[..., Engine]) -> None:
    """retry_run raises StoreError for a run that is still RUNNING."""
    engine = engine_factory()
    run_id = await engine.store.create_run(
        name="w", started_at="2026-01-01T00:00:00+00:00", nodes=[("a", "echo")]
    )
    with pytest.raises(StoreError, match="RUNNING"):
        await _retry(engine, run_id)


# -- retention -----------------------------------------------------------------------------------


def _ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def _age(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))
    return path


async def test_retention_deletes_what_is_old_and_nothing_else(
    engine_factory: Callable[..., Engine],
    sql: Callable[..., list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    """prune_history deletes runs finished over N days ago with their nodes and old files in
    processed/ and rejected/, and keeps recent runs, RUNNING runs and processing/."""
    engine = engine_factory(history_retention_days=7)
    store = engine.store

    async def finished_run(name: str, days: float, retry_of: int | None = None) -> int:
        if retry_of is None:
            run_id = await store.create_run(
                name=name, started_at=_ago(days + 0.01), nodes=[("a", "echo"), ("b", "echo")]
            )
        else:
            run_id = await store.create_retry(
                retry_of,
                name=name,
                started_at=_ago(days + 0.01),
                nodes=[("a", "echo")],
                source=None,
                definition=None,
                idempotency_key=None,
                reused_reason="",
            )
        await store.finish_run(
            run_id, status="SUCCESS", finished_at=_ago(days), duration=1.0, summary={}
        )
        return run_id

    old = await finished_run("old", 10)
    recent = await finished_run("recent", 1)
    recent_retry = await finished_run("recent retry", 1, retry_of=old)
    running = await store.create_run(name="running", started_at=_ago(30), nodes=[("a", "echo")])
    await store.request_cancel(old, _ago(10))  # a stale request goes with its run
    inbox = tmp_path / "inbox"
    gone = [_age(inbox / "processed" / "old.json", 8), _age(inbox / "rejected" / "old.json", 8)]
    kept = [
        _age(inbox / "processed" / "new.json", 6),
        _age(inbox / "rejected" / "new.json", 0),
        _age(inbox / "processing" / "old.json", 30),
        _age(inbox / "old.json", 30),
    ]

    counts = await prune_history(store, engine.settings)

    assert counts == {"runs": 1, "nodes": 2, "files": 2}
    runs = {r["id"]: r for r in sql("SELECT id, retry_of FROM workflowrun")}
    assert set(runs) == {recent, recent_retry, running}
    assert runs[recent_retry]["retry_of"] is None
    assert sql("SELECT 1 FROM noderun WHERE workflow_id = ?", old) == []
    assert sql("SELECT * FROM cancel_request") == []
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    assert await prune_history(store, engine.settings) == {"runs": 0, "nodes": 0, "files": 0}


async def test_retention_of_zero_days_keeps_everything(
    engine_factory: Callable[..., Engine], tmp_path: Path
) -> None:
    """With history_retention_days = 0 (the default) nothing is deleted."""
    engine = engine_factory()
    run_id = await engine.store.create_run(name="x", started_at=_ago(400), nodes=[])
    await engine.store.finish_run(
        run_id, status="FAILED", finished_at=_ago(400), duration=0, summary={}
    )
    old_file = _age(tmp_path / "inbox" / "processed" / "x.json", 400)
    assert engine.settings.history_retention_days == 0
    assert await prune_history(engine.store, engine.settings) == {"runs": 0, "nodes": 0, "files": 0}
    assert old_file.exists()
    assert await engine.store.get_run(run_id) is not None


def test_daemon_prunes_history_at_start(
    daemons: Daemons, run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """With history_retention_days set, the daemon prunes at start and logs history.pruned."""
    assert run_cli("execute", write_workflow(echo_doc("ancient"))).returncode == 0
    execute(
        daemons.db_path,
        "UPDATE workflowrun SET started_at = ?, finished_at = ?",
        _ago(40),
        _ago(40),
    )
    daemon = daemons.start(WFE_HISTORY_RETENTION_DAYS="30")
    [event] = wait_until(lambda: daemon.events("history.pruned"), 10, "history.pruned")
    assert (event["runs"], event["nodes"]) == (1, 1)
    assert query(daemons.db_path, "SELECT * FROM workflowrun") == []
