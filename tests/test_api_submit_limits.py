"""Tests of the limits of the API's writes (``POST /api/v1/workflows`` and
``.../retry``): what the daemon keeps stays within ``max_file_size``, and a submission it
cannot take now is refused ``503`` with ``Retry-After``. Each against a real daemon over
real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from daemon_helpers import (
    Daemons,
    echo_doc,
    echo_then_sleep,
    query,
    results,
    wait_result,
    wait_running,
    wait_until,
)
from test_api_submit import post, start
from wfe_daemon.config import load_settings
from wfe_daemon.core.records import RunRecord
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service import retry
from wfe_daemon.tasks import BUILTINS


def numbers_body(count: int) -> bytes:
    """A valid workflow of ``count`` numbers written ``1E5``: each grows by 3 bytes when
    the document is re-encoded (``100000.0``)."""
    text = json.dumps({"name": "big", "nodes": [{"id": "a", "type": "echo", "params": {}}]})
    return text.replace(
        '"params": {}', '"params": {"v": [' + ",".join(["1E5"] * count) + "]}"
    ).encode()


def test_key_that_grows_the_document_past_max_file_size_is_refused_413(daemons: Daemons) -> None:
    """With an ``Idempotency-Key``, the document is re-encoded to hold it: when that makes
    it larger than ``max_file_size`` it is refused 413 naming the limit, and nothing is
    recorded or left in ``processing/``; without the key the same body is taken and runs."""
    port = start(daemons, WFE_MAX_FILE_SIZE="2000")
    body = numbers_body(400)
    assert len(body) < 2000
    key = {"Idempotency-Key": "numbers-1"}
    status, _, answer = post(port, "/api/v1/workflows?name=keyed", body, headers=key)
    assert status == 413, answer
    assert "max_file_size" in answer["error"]
    assert query(daemons.db_path, "SELECT id FROM workflowrun") == []
    assert not any((daemons.inbox / "processing").iterdir())
    status, _, answer = post(port, "/api/v1/workflows?name=plain", body)
    assert status == 201, answer
    assert wait_result(daemons.outbox, "plain")["status"] == "SUCCESS"


def test_retry_that_grows_the_document_past_max_file_size_is_refused_413(
    daemons: Daemons,
) -> None:
    """A retry writes the stored workflow re-encoded: when that is larger than
    ``max_file_size`` it is refused 413 naming the limit, and no retry is recorded."""
    port = start(daemons, WFE_MAX_FILE_SIZE="2000")
    status, _, first = post(port, "/api/v1/workflows?name=plain", numbers_body(400))
    assert status == 201, first
    assert wait_result(daemons.outbox, "plain")["status"] == "SUCCESS"
    status, _, answer = post(port, f"/api/v1/runs/{first['run_id']}/retry")
    assert status == 413, answer
    assert "max_file_size" in answer["error"]
    wait_until(lambda: not any((daemons.inbox / "processing").iterdir()), 5, "processing/ empty")
    assert [row["id"] for row in query(daemons.db_path, "SELECT id FROM workflowrun")] == [
        first["run_id"]
    ]


async def test_large_retry_is_validated_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning the retry of a run whose workflow is over 64 KiB validates it in a worker
    thread, as a large submission is, so the event loop keeps serving; a small one is
    validated in place."""
    seen: list[bool] = []
    real = retry.parse_workflow

    def recording(doc: Any, registry: TaskRegistry) -> Any:
        seen.append(threading.current_thread() is threading.main_thread())
        return real(doc, registry)

    monkeypatch.setattr(retry, "parse_workflow", recording)
    settings = load_settings({"inbox": str(tmp_path)}, {}, None)
    registry = TaskRegistry.load(BUILTINS, entry_point_group=None)
    big = {"name": "big", "nodes": [{"id": "a", "type": "echo", "params": {"v": "x" * 70_000}}]}
    for definition in (big, echo_doc("small")):
        run = {"id": 1, "status": "SUCCESS", "source": "w.json", "source_path": None}
        run["definition"] = definition
        plan = await retry.plan_retry(cast(RunRecord, run), settings=settings, registry=registry)
        assert plan.workflow.name == definition["name"]
    assert seen == [False, True]


@pytest.mark.timeout(180)
def test_submissions_beyond_the_waiting_bound_are_refused_503(daemons: Daemons) -> None:
    """With one worker busy, submissions wait in the daemon up to 1,000 per worker; past
    that they are refused 503 with ``Retry-After`` and nothing is written or recorded for
    them; those answered 201 all run once the busy run is cancelled."""
    port = start(daemons, WFE_MAX_CONCURRENT_WORKFLOWS="1")
    status, _, busy = post(port, "/api/v1/workflows?name=busy", echo_then_sleep("busy", 60))
    assert status == 201
    wait_running(daemons.db_path, "b")
    taken: list[int] = []
    refused: list[tuple[dict[str, str], Any]] = []
    for n in range(1010):
        status, headers, answer = post(port, f"/api/v1/workflows?name=q{n}", echo_doc("q"))
        if status == 201:
            taken.append(answer["run_id"])
        else:
            assert status == 503, answer
            refused.append((headers, answer))
    assert 1000 <= len(taken) < 1010
    assert refused
    headers, answer = refused[0]
    assert headers["Retry-After"].isdigit()
    assert "wait" in answer["error"]
    runs = query(daemons.db_path, "SELECT id FROM workflowrun WHERE id != ?", busy["run_id"])
    assert sorted(row["id"] for row in runs) == sorted(taken)
    assert post(port, f"/api/v1/runs/{busy['run_id']}/cancel")[0] == 202
    wait_until(lambda: len(results(daemons.outbox)) == len(taken) + 1, 60, "every result")
