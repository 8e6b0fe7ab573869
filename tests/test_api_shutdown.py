"""Tests of the API during a graceful stop: a submission answered 201 while the daemon
stops is run. Against a real daemon subprocess over real HTTP on 127.0.0.1."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, echo_doc, free_port, query, wait_result
from test_api_submit import post
from test_store_faults import lock_held

TOKEN = "t0ken-for-tests"


def _wait_recording(processing: Path, poster: threading.Thread) -> None:
    """Wait until the submission's file is in place (its own folder in ``processing/``,
    not only the temporary file it is written to), then a moment more: its record has
    then begun, and waits for the database's lock."""
    while not any(not entry.name.startswith(".") for entry in processing.iterdir()):
        poster.join(0.02)
    poster.join(0.5)


@pytest.mark.timeout(60)
def test_submission_answered_during_the_stop_is_run(daemons: Daemons) -> None:
    """A POST still being recorded when SIGTERM comes (another process holds the
    database's lock until the daemon says STOPPING) is answered 201 while the server
    closes, and its run is run before the daemon exits: not left RUNNING."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    answers: list[tuple[int, dict[str, str], Any]] = []
    with lock_held(daemons.db_path) as holder:
        poster = threading.Thread(
            target=lambda: answers.append(
                post(port, "/api/v1/workflows?name=late", echo_doc("late"), token=TOKEN)
            )
        )
        poster.start()
        try:
            _wait_recording(daemons.inbox / "processing", poster)
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.wait_notice("STOPPING=1", 10)
            holder.release()
        finally:
            poster.join(30)
    assert daemon.wait_exit() == 0
    status, _, answer = answers[0]
    assert status == 201, answer
    rows = query(daemons.db_path, "SELECT status FROM workflowrun WHERE id = ?", answer["run_id"])
    assert rows == [{"status": "SUCCESS"}]


@pytest.mark.timeout(90)
def test_submission_still_unrecorded_at_the_stop_is_told_it_may_still_run(
    daemons: Daemons,
) -> None:
    """A POST whose record is still held up when the daemon stops (the lock outlives the
    server's close) is answered 503 saying it may still run, not a dropped connection;
    the next start runs it exactly once, and its key makes a resend a DUPLICATE."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    key = {"Idempotency-Key": "held-1"}
    answers: list[tuple[int, dict[str, str], Any]] = []
    with lock_held(daemons.db_path) as holder:
        poster = threading.Thread(
            target=lambda: answers.append(
                post(port, "/api/v1/workflows?name=held", echo_doc("h"), token=TOKEN, headers=key)
            )
        )
        poster.start()
        try:
            _wait_recording(daemons.inbox / "processing", poster)
            daemon.proc.send_signal(signal.SIGTERM)
            poster.join(30)  # answered while the lock is still held
            assert answers, "no answer before the server closed"
        finally:
            holder.release()
            poster.join(30)
    status, _, answer = answers[0]
    assert status == 503, answer
    assert "may still run" in answer["error"] and "held-1" in answer["error"]
    assert daemon.wait_exit() == 0
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    assert wait_result(daemons.outbox, "held", timeout=30)["status"] == "SUCCESS"
    status, _, again = post(
        port, "/api/v1/workflows?name=again", echo_doc("h"), token=TOKEN, headers=key
    )
    assert status == 200 and again["status"] == "DUPLICATE", again
    rows = query(daemons.db_path, "SELECT status FROM workflowrun ORDER BY id")
    assert [row["status"] for row in rows] == ["SUCCESS", "DUPLICATE"]
