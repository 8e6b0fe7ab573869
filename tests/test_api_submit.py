"""Tests of the API's writes (``POST /api/v1/workflows``, ``.../cancel``, ``.../retry``),
each against a real daemon subprocess over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from daemon_helpers import (
    Daemons,
    echo_doc,
    echo_then_sleep,
    free_port,
    query,
    read_json,
    results,
    wait_result,
    wait_running,
    wait_until,
)

TOKEN = "t0ken-for-tests"
FAILING = {
    "name": "half",
    "nodes": [
        {"id": "a", "type": "echo", "params": {"v": 1}},
        {"id": "b", "type": "sleep", "depends_on": ["a"], "timeout": 0.2, "params": {"seconds": 5}},
    ],
}


def post(
    port: int,
    path: str,
    body: bytes | dict[str, Any] = b"",
    *,
    token: str | None = TOKEN,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], Any]:
    """POST to the daemon: the status, the headers and the JSON answer (also for errors)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": content_type, **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=sent, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def start(daemons: Daemons, **env: str) -> int:
    """Start a daemon with the HTTP API (and the test token); its port."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN, **env)
    return port


def test_submission_is_answered_201_and_published_under_its_stem(daemons: Daemons) -> None:
    """A valid document is answered 201 with its run and Location, runs in the daemon, and
    its result reaches the outbox under ``?name=`` (or the workflow's name made safe)."""
    port = start(daemons)
    status, headers, answer = post(port, "/api/v1/workflows?name=nightly", echo_doc("w"))
    assert status == 201
    assert answer == {
        "run_id": answer["run_id"],
        "status": "RUNNING",
        "location": f"/api/v1/runs/{answer['run_id']}",
    }
    assert headers["Location"] == answer["location"]
    result = wait_result(daemons.outbox, "nightly")
    assert (result["run_id"], result["status"], result["source"]) == (
        answer["run_id"],
        "SUCCESS",
        "nightly.json",
    )
    status, _, second = post(port, "/api/v1/workflows", echo_doc("report of/today"))
    assert status == 201
    assert wait_result(daemons.outbox, "report_of_today")["run_id"] == second["run_id"]
    wait_until(lambda: not any((daemons.inbox / "processing").iterdir()), 5, "processing/ emptied")


def test_same_key_twice_is_published_as_a_duplicate(daemons: Daemons) -> None:
    """With an ``Idempotency-Key``, the same document again is answered 200 DUPLICATE naming
    the first run, and a DUPLICATE result reaches the outbox; a document holding another
    key is refused 422 naming both."""
    port = start(daemons)
    key = {"Idempotency-Key": "nightly-2026-12-04"}
    status, _, first = post(port, "/api/v1/workflows?name=one", echo_doc("w"), headers=key)
    assert status == 201
    status, headers, again = post(port, "/api/v1/workflows?name=two", echo_doc("w"), headers=key)
    assert status == 200
    assert again["status"] == "DUPLICATE"
    assert again["duplicate_of"] == first["run_id"]
    assert headers["Location"] == f"/api/v1/runs/{again['run_id']}"
    duplicate = wait_result(daemons.outbox, "two")
    assert (duplicate["status"], duplicate["duplicate_of"]) == ("DUPLICATE", first["run_id"])
    assert wait_result(daemons.outbox, "one")["status"] == "SUCCESS"
    other = echo_doc("w", idempotency_key="another-key")
    status, _, refused = post(port, "/api/v1/workflows", other, headers=key)
    assert status == 422
    assert "nightly-2026-12-04" in refused["problems"][0]
    assert "another-key" in refused["problems"][0]


def test_invalid_document_is_refused_with_every_problem(daemons: Daemons) -> None:
    """An invalid workflow is answered 422 listing every problem, and nothing is recorded
    or written; a bad ``?name=`` is 422 too."""
    port = start(daemons)
    doc = {"name": "", "nodes": [{"id": "a", "type": "no_such_type"}, {"id": "a"}]}
    status, _, answer = post(port, "/api/v1/workflows", doc)
    assert status == 422
    assert answer["error"] == "the workflow is not valid"
    assert len(answer["problems"]) >= 3
    assert any("no_such_type" in problem for problem in answer["problems"])
    status, _, answer = post(port, "/api/v1/workflows", b"{not json")
    assert status == 422
    assert answer["problems"]
    status, _, answer = post(port, "/api/v1/workflows?name=../escape", echo_doc())
    assert status == 422
    assert "not a safe file stem" in answer["error"]
    assert query(daemons.db_path, "SELECT id FROM workflowrun") == []
    assert list((daemons.inbox / "processing").iterdir()) == []


def test_too_large_and_wrong_content_type_are_refused(daemons: Daemons) -> None:
    """A body over ``max_file_size`` is 413, a body that is not JSON by its content type is
    415; neither is recorded."""
    port = start(daemons, WFE_MAX_FILE_SIZE="2000")
    big = echo_doc("big", description="x" * 3000)
    status, _, answer = post(port, "/api/v1/workflows", big)
    assert status == 413
    assert "max_file_size" in answer["error"]
    status, _, answer = post(port, "/api/v1/workflows", echo_doc(), content_type="text/plain")
    assert status == 415
    assert "application/json" in answer["error"]
    charset = "application/json; charset=UTF-8"
    status, _, _ = post(port, "/api/v1/workflows?name=ok", echo_doc(), content_type=charset)
    assert status == 201
    assert wait_result(daemons.outbox, "ok")["status"] == "SUCCESS"
    assert len(query(daemons.db_path, "SELECT id FROM workflowrun")) == 1


@pytest.mark.timeout(90)
def test_body_that_never_finishes_is_answered_408(daemons: Daemons) -> None:
    """A client that sends half the body its ``Content-Length`` announces gets 408 once the
    body timeout passes, and nothing is recorded."""
    port = start(daemons)
    body = json.dumps(echo_doc()).encode()
    head = (
        "POST /api/v1/workflows HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + body[: len(body) // 2])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert query(daemons.db_path, "SELECT id FROM workflowrun") == []


@pytest.mark.timeout(90)
def test_kill_right_after_201_loses_nothing_and_runs_each_once(daemons: Daemons) -> None:
    """SIGKILL right after the 201s, then a restart: every answered submission finishes
    exactly once, with one result each, and no file is left in ``processing/``."""
    port = free_port()
    env = {"WFE_HTTP_PORT": str(port), "WFE_API_TOKEN": TOKEN, "WFE_MAX_CONCURRENT_WORKFLOWS": "1"}
    daemon = daemons.start(**env)
    answered = []
    for n in range(4):
        status, _, answer = post(port, f"/api/v1/workflows?name=k{n}", echo_then_sleep("k", 0.3))
        assert status == 201
        answered.append(answer["run_id"])
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait_exit()
    daemons.start(**env)
    for n, run_id in enumerate(answered):
        result = wait_result(daemons.outbox, f"k{n}", timeout=20)
        assert (result["run_id"], result["status"]) == (run_id, "SUCCESS")
    wait_until(lambda: not any((daemons.inbox / "processing").iterdir()), 10, "processing/ emptied")
    assert len(results(daemons.outbox)) == 4
    runs = query(daemons.db_path, "SELECT id, status FROM workflowrun ORDER BY id")
    assert runs == [{"id": run_id, "status": "SUCCESS"} for run_id in answered]
    nodes = query(daemons.db_path, "SELECT workflow_id, attempts FROM noderun WHERE node_id = 'a'")
    assert all(row["attempts"] == 1 for row in nodes)


def test_cancel_stops_a_sleeping_run(daemons: Daemons) -> None:
    """Cancel of a running run is answered 202 and the run ends CANCELLED; once finished it
    is 409, and an unknown run is 404 (a non-numeric id too)."""
    port = start(daemons)
    status, _, answer = post(port, "/api/v1/workflows?name=long", echo_then_sleep("long", 60))
    assert status == 201
    run_id = answer["run_id"]
    assert wait_running(daemons.db_path, "b") == run_id
    status, _, cancelled = post(port, f"/api/v1/runs/{run_id}/cancel")
    assert (status, cancelled) == (202, {"run_id": run_id, "status": "RUNNING"})
    result = wait_result(daemons.outbox, "long")
    assert result["status"] == "CANCELLED"
    assert result["nodes"]["b"]["status"] == "CANCELLED"
    status, _, again = post(port, f"/api/v1/runs/{run_id}/cancel")
    assert status == 409
    assert "CANCELLED" in again["error"]
    assert post(port, "/api/v1/runs/999/cancel")[0] == 404
    status, _, answer = post(port, "/api/v1/runs/abc/cancel")
    assert (status, answer["error"]) == (404, "no run 'abc'")


def test_retry_runs_in_the_daemon_with_retry_of(daemons: Daemons) -> None:
    """Retry of a finished run with a failed node is answered 201 naming it, runs in the
    daemon reusing the node that succeeded, and its result carries ``retry_of``; a run
    still running is 409, an unknown one 404."""
    port = start(daemons)
    status, _, first = post(port, "/api/v1/workflows?name=half", FAILING)
    assert status == 201
    assert wait_result(daemons.outbox, "half")["status"] == "PARTIAL_SUCCESS"
    status, headers, retry = post(port, f"/api/v1/runs/{first['run_id']}/retry")
    assert status == 201
    assert retry["retry_of"] == first["run_id"]
    assert retry["status"] == "RUNNING"
    assert headers["Location"] == f"/api/v1/runs/{retry['run_id']}"
    published = wait_until(
        lambda: [
            doc
            for path in results(daemons.outbox)
            if (doc := read_json(path)) and doc["run_id"] == retry["run_id"]
        ],
        15,
        "the retry's result",
    )[0]
    assert published["retry_of"] == first["run_id"]
    assert published["source"] == "half.json"
    assert published["nodes"]["a"]["reason"] == f"output reused from run {first['run_id']}"
    assert published["nodes"]["b"]["status"] == "FAILED"
    status, _, sleeping = post(port, "/api/v1/workflows?name=zz", echo_then_sleep("zz", 60))
    wait_running(daemons.db_path, "b")
    status, _, answer = post(port, f"/api/v1/runs/{sleeping['run_id']}/retry")
    assert status == 409
    assert "RUNNING" in answer["error"]
    assert post(port, "/api/v1/runs/4242/retry")[0] == 404


def test_posts_need_the_right_token(daemons: Daemons) -> None:
    """Without a configured token a POST is 403; with one, a wrong token is 401 and
    nothing is recorded, the right one works."""
    open_port = free_port()
    daemons.start(WFE_HTTP_PORT=str(open_port))
    status, _, answer = post(open_port, "/api/v1/workflows", echo_doc(), token=None)
    assert status == 403
    assert "token" in answer["error"]
    daemons.started[-1].terminate()
    port = start(daemons)
    assert post(port, "/api/v1/workflows", echo_doc(), token="wrong")[0] == 401
    assert post(port, "/api/v1/workflows", echo_doc(), token=None)[0] == 401
    assert post(port, "/api/v1/runs/1/cancel", token="wrong")[0] == 401
    assert query(daemons.db_path, "SELECT id FROM workflowrun") == []
    assert post(port, "/api/v1/workflows?name=right", echo_doc())[0] == 201
    assert wait_result(daemons.outbox, "right")["status"] == "SUCCESS"


def test_retry_of_a_run_with_secrets_runs_the_original_document(daemons: Daemons) -> None:
    """A run whose stored definition has its secrets redacted is retried from its original
    document (found in ``processed/``): the daemon runs the retry from a file holding the
    secret, never from the ``***`` the database keeps."""
    port = start(daemons)
    doc = json.loads(json.dumps(FAILING))
    doc["nodes"][0]["params"] = {"api_token": "s3cret-value"}
    status, _, first = post(port, "/api/v1/workflows?name=secret", doc)
    assert status == 201
    assert wait_result(daemons.outbox, "secret")["status"] == "PARTIAL_SUCCESS"
    stored = query(
        daemons.db_path, "SELECT definition FROM workflowrun WHERE id = ?", first["run_id"]
    )
    assert "s3cret-value" not in stored[0]["definition"]
    status, _, retry = post(port, f"/api/v1/runs/{first['run_id']}/retry")
    assert status == 201, retry
    wait_until(
        lambda: [p for p in results(daemons.outbox) if (read_json(p) or {}).get("retry_of")],
        15,
        "the retry's result",
    )
    kept = wait_until(
        lambda: [
            path for path in (daemons.inbox / "processed").iterdir() if path.name != "secret.json"
        ],
        5,
        "the retry's file in processed/",
    )
    assert json.loads(kept[0].read_bytes()) == doc


def test_start_finishes_what_a_kill_mid_submission_left(daemons: Daemons) -> None:
    """What a kill before the answer leaves is settled at the next start: a submission's
    file written but not recorded runs once under its stem, and a temporary file never
    renamed is removed without running."""
    processing = daemons.inbox / "processing"
    (processing / "0123456789ab").mkdir(parents=True)
    (processing / "0123456789ab" / "unrecorded.json").write_text(json.dumps(echo_doc("u")))
    temporary = processing / ".submit.x1y2z3.tmp"
    temporary.write_text(json.dumps(echo_doc("never")))
    start(daemons)
    result = wait_result(daemons.outbox, "unrecorded")
    assert (result["status"], result["source"]) == ("SUCCESS", "unrecorded.json")
    assert not temporary.exists()
    wait_until(lambda: not any(processing.iterdir()), 5, "processing/ emptied")
    assert [row["name"] for row in query(daemons.db_path, "SELECT name FROM workflowrun")] == ["u"]
