"""Tests of the API during a graceful stop: a submission answered 201 while the daemon
stops is run. Against a real daemon subprocess over real HTTP on 127.0.0.1."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from daemon_helpers import Daemons, echo_doc, free_port, query
from test_api_submit import post
from test_store_faults import lock_held

TOKEN = "t0ken-for-tests"


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
            processing = daemons.inbox / "processing"
            while not any(processing.iterdir()):  # the file is written: recording waits
                poster.join(0.02)
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
