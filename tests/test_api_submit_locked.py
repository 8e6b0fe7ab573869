"""Tests of submissions while another process holds the database's write lock: the API
answers in bounded time, and what it could not record runs once or not at all. Against
a real daemon (real HTTP on 127.0.0.1, a real SQLite file, a real lock holder), and
in-process where the record must fail for sure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from daemon_helpers import Daemons, echo_doc, get, query, wait_result, wait_until
from test_api_submit import post, start
from test_store_faults import lock_held
from wfe_daemon.config import load_settings
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service.handover import Handover, NotTaken, accept
from wfe_daemon.store.database import Store
from wfe_daemon.tasks import BUILTINS

TOKEN = "t0ken-for-tests"


def entries(folder: Path) -> set[str]:
    """The names in ``folder``."""
    return {path.name for path in folder.iterdir()}


@pytest.mark.timeout(90)
def test_locked_database_answers_503_and_the_submission_runs_once(daemons: Daemons) -> None:
    """While the database is locked, a submission is answered 503 within the bounded wait,
    without ``Retry-After``, saying it may still run and to resubmit with the same key;
    a submission then is refused at once and writes nothing. Once the lock goes, the first
    runs, once, and the same key again is a DUPLICATE of it."""
    port = start(daemons)
    processing = daemons.inbox / "processing"
    key = {"Idempotency-Key": "locked-1"}
    with lock_held(daemons.db_path) as holder:
        status, headers, answer = post(
            port, "/api/v1/workflows?name=first", echo_doc("w"), headers=key, timeout=30
        )
        assert status == 503, answer
        assert "Retry-After" not in headers  # no blind resend: the key is the way
        assert "may still run" in answer["error"]
        assert "locked-1" in answer["error"]
        kept = entries(processing)
        assert len(kept) == 1
        wait_until(
            lambda: b"failed attempts" in get(port, "/healthz")[1],
            30,
            "the failed write reported",
        )
        status, headers, answer = post(port, "/api/v1/workflows?name=second", echo_doc("w"))
        assert status == 503, answer
        assert headers["Retry-After"].isdigit()
        assert "not taking writes" in answer["error"]
        assert entries(processing) == kept
        holder.release()
    assert wait_result(daemons.outbox, "first", timeout=30)["status"] == "SUCCESS"
    status, _, again = post(port, "/api/v1/workflows?name=third", echo_doc("w"), headers=key)
    assert status == 200, again
    assert again["status"] == "DUPLICATE"
    runs = query(daemons.db_path, "SELECT id, status, source FROM workflowrun ORDER BY id")
    assert [(row["status"], row["source"]) for row in runs] == [
        ("SUCCESS", "first.json"),
        ("DUPLICATE", "third.json"),
    ]
    wait_until(lambda: not any(processing.iterdir()), 10, "processing/ emptied")


@pytest.mark.timeout(120)
def test_submit_command_sends_a_key_and_says_how_to_resend(daemons: Daemons) -> None:
    """``submit`` against a locked database ends (exit 1) printing the Idempotency-Key it
    generated and how to resend; resent with that key once the lock is gone, the workflow
    is a DUPLICATE of the run the daemon made of the first. ``retry --detach`` ends too."""
    port = start(daemons)
    env = daemons.env(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    path = daemons.root / "nightly.json"
    path.write_text(json.dumps(echo_doc("w")))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wfe_daemon", *args],
            cwd=daemons.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=45,
            check=False,
        )

    status, _, done = post(port, "/api/v1/workflows?name=done", echo_doc("w"))
    assert status == 201
    wait_result(daemons.outbox, "done")
    with lock_held(daemons.db_path) as holder:
        submitted = cli("submit", str(path))
        assert submitted.returncode == 1, submitted.stderr
        found = re.search(r"--idempotency-key ([0-9a-f-]{36})", submitted.stderr)
        assert found, submitted.stderr
        retried = cli("retry", str(done["run_id"]), "--detach")
        assert retried.returncode == 1, retried.stderr
        assert "wfe-daemon:" in retried.stderr
        holder.release()
    assert wait_result(daemons.outbox, "nightly", timeout=30)["status"] == "SUCCESS"
    again = cli("submit", str(path), "--idempotency-key", found.group(1), "--name", "again")
    assert again.returncode == 0, again.stderr
    rows = query(daemons.db_path, "SELECT status FROM workflowrun WHERE id = ?", int(again.stdout))
    assert rows == [{"status": "DUPLICATE"}]


async def test_record_that_fails_for_sure_removes_the_file(tmp_path: Path) -> None:
    """When recording the run fails for sure (the store gives up on a locked database),
    the submission is refused and its file removed: nothing would run it later."""
    settings = load_settings(
        {"inbox": str(tmp_path / "inbox"), "db_path": str(tmp_path / "wfe.db")}, {}, None
    )
    processing = settings.inbox / "processing"
    processing.mkdir(parents=True)
    registry = TaskRegistry.load(BUILTINS, entry_point_group=None)
    handover = Handover()
    async with Store.open(settings.db_path, busy_timeout_s=0.2, give_up_s=0.5) as store:
        send, receive = anyio.create_memory_object_stream[object](10)
        async with anyio.create_task_group() as tg, send, receive:
            await tg.start(handover.feed, send)
            with lock_held(settings.db_path) as holder:
                with pytest.raises(NotTaken, match="could not be recorded"):
                    await accept(
                        json.dumps(echo_doc("w")).encode(),
                        settings=settings,
                        registry=registry,
                        store=store,
                        handover=handover,
                        leftovers=set(),
                    )
                holder.release()
            tg.cancel_scope.cancel()
    assert list(processing.iterdir()) == []
