"""Tests of the API's reads: a real daemon as a subprocess, real HTTP on 127.0.0.1.

Runs (pages, filters, counts), one run (live while it runs), a node with its resolved
params, the definition, the graph in three formats, the task types, and paths that try
to reach outside (each a 404 in JSON). The SVG drawing's fallbacks are tested in-process.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from daemon_helpers import (
    Daemons,
    drop,
    echo_doc,
    execute,
    free_port,
    get,
    query,
    wait_result,
    wait_running,
    wait_until,
)
from wfe_daemon.core.graph import GraphNode
from wfe_daemon.web.graph import GraphRenderer

SVG = "{http://www.w3.org/2000/svg}"

CHAIN = {
    "name": "chain",
    "nodes": [
        {"id": "a", "type": "echo", "params": {"n": "hello", "password": "pw-of-a"}},
        {
            "id": "b",
            "type": "echo",
            "depends_on": ["a"],
            "params": {
                "text": "got {{ a.n }}",
                "copy": "{{ a }}",
                "password": "hunter2",
                "nested": {"api_key": "key-123", "plain": "{{ a.n }}"},
            },
        },
        {"id": "c", "type": "sleep", "depends_on": ["b"], "params": {"seconds": 30}},
        {
            "id": "d",
            "type": "echo",
            "depends_on": ["c"],
            "params": {"slept": "{{ c.slept }}", "api_key": "key-456"},
        },
    ],
}
"""``a`` -> ``b`` (references and secrets) -> ``c`` (sleeps) -> ``d`` (refers to ``c``)."""

FAILING = {
    "name": "failing",
    "nodes": [{"id": "t", "type": "sleep", "timeout": 0.1, "params": {"seconds": 5}}],
}


def get_json(port: int, path: str) -> tuple[int, Any]:
    """GET ``path``: the status and the parsed JSON body."""
    status, body = get(port, path)
    return status, json.loads(body)


def get_raw(port: int, path: str) -> tuple[int, str, bytes]:
    """GET ``path`` sent exactly as given (no client normalises it): status, type, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def runs_page(port: int, **params: Any) -> dict[str, Any]:
    """``GET /api/v1/runs`` with ``params``, expecting 200."""
    status, body = get_json(port, "/api/v1/runs?" + urlencode(params))
    assert status == 200, body
    page: dict[str, Any] = body
    return page


def counts(port: int, **params: Any) -> dict[str, Any]:
    """``GET /api/v1/runs/counts`` with ``params``, expecting 200."""
    status, body = get_json(port, "/api/v1/runs/counts?" + urlencode(params))
    assert status == 200, body
    found: dict[str, Any] = body
    return found


def start(daemons: Daemons) -> int:
    """Start a daemon serving HTTP; its port."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    return port


def finished(port: int, total: int) -> bool:
    """Whether ``total`` runs are recorded and none is RUNNING."""
    found = counts(port)
    return found["total"] == total and "RUNNING" not in found["counts"]


@pytest.mark.timeout(120)
def test_paging_with_a_cursor_while_new_runs_arrive(daemons: Daemons) -> None:
    """Paging through 120 runs 50 at a time shows each once, newest first, although 15 new
    runs arrive between pages; the last page has no next cursor; a new first page shows
    the new runs."""
    port = start(daemons)
    for i in range(120):
        drop(daemons.inbox, f"w{i:03d}.json", echo_doc(f"w{i:03d}"))
    wait_until(lambda: finished(port, 120), 90, "120 runs finished")
    first = runs_page(port, limit=50)
    for i in range(15):
        drop(daemons.inbox, f"late{i:02d}.json", echo_doc(f"late{i:02d}"))
    wait_until(lambda: counts(port)["total"] >= 125, 30, "new runs arriving")
    second = runs_page(port, limit=50, cursor=first["next_cursor"])
    third = runs_page(port, limit=50, cursor=second["next_cursor"])

    ids = [run["id"] for page in (first, second, third) for run in page["runs"]]
    assert [len(page["runs"]) for page in (first, second, third)] == [50, 50, 20]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 120
    names = {run["name"] for page in (first, second, third) for run in page["runs"]}
    assert names == {f"w{i:03d}" for i in range(120)}
    assert third["next_cursor"] is None
    assert set(first["runs"][0]) == {
        "id",
        "name",
        "status",
        "source",
        "started_at",
        "finished_at",
        "duration",
        "error",
        "retry_of",
    }
    assert first["runs"][0]["retry_of"] is None
    wait_until(lambda: finished(port, 135), 30, "the new runs finished")
    newest = runs_page(port, limit=15)["runs"]
    assert {run["name"] for run in newest} == {f"late{i:02d}" for i in range(15)}
    assert min(run["id"] for run in newest) > max(ids)


def test_filters_and_counts(daemons: Daemons) -> None:
    """``status``, ``workflow``, ``since`` and ``until`` keep the runs they name, in pages
    and in counts, and a limit cuts the page."""
    port = start(daemons)
    drop(daemons.inbox, "one.json", echo_doc("one"))
    drop(daemons.inbox, "two.json", echo_doc("two"))
    drop(daemons.inbox, "failing.json", FAILING)
    drop(daemons.inbox, "broken.json", b"{not json")
    wait_until(lambda: finished(port, 4), 15, "four runs finished")

    assert counts(port) == {
        "counts": {"SUCCESS": 2, "FAILED": 1, "REJECTED": 1},
        "total": 4,
    }
    by_status = runs_page(port, status="FAILED,REJECTED")["runs"]
    assert sorted(run["status"] for run in by_status) == ["FAILED", "REJECTED"]
    failed = next(run for run in by_status if run["status"] == "FAILED")
    assert failed["error"].startswith("t: ")
    assert [run["name"] for run in runs_page(port, workflow="two")["runs"]] == ["two"]
    assert counts(port, workflow="two") == {"counts": {"SUCCESS": 1}, "total": 1}
    assert len(runs_page(port, limit=1)["runs"]) == 1
    assert runs_page(port, limit=1)["next_cursor"] is not None

    stamps = sorted(
        row["started_at"] for row in query(daemons.db_path, "SELECT * FROM workflowrun")
    )
    assert len(runs_page(port, since="2000-01-01T00:00:00+02:00")["runs"]) == 4
    assert runs_page(port, since="2999-01-01")["runs"] == []
    assert runs_page(port, until=stamps[0])["runs"] == []  # until is exclusive
    assert len(runs_page(port, until=stamps[1])["runs"]) == 1
    # the same moment in another offset
    assert len(runs_page(port, until=_in_offset(stamps[1]))["runs"]) == 1
    assert counts(port, since=stamps[-1])["total"] == 1
    assert runs_page(port, status="")["runs"] == runs_page(port)["runs"]


def _in_offset(stamp: str) -> str:
    """``stamp`` (UTC) written as the same moment at +05:30."""
    from datetime import datetime, timedelta, timezone

    moment = datetime.fromisoformat(stamp)
    return moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()


BAD_QUERIES = [
    ("/api/v1/runs?status=NOPE", "status"),
    ("/api/v1/runs?status=SUCCESS,success", "status"),
    ("/api/v1/runs?limit=0", "limit"),
    ("/api/v1/runs?limit=501", "limit"),
    ("/api/v1/runs?limit=ten", "limit"),
    ("/api/v1/runs?limit=1&limit=2", "limit"),
    ("/api/v1/runs?since=yesterday", "since"),
    ("/api/v1/runs?until=2026-13-01", "until"),
    ("/api/v1/runs?cursor=garbage", "cursor"),
    ("/api/v1/runs?cursor=" + quote("before:1"), "cursor"),
    ("/api/v1/runs?workflow=", "workflow"),
    ("/api/v1/runs?statuses=SUCCESS", "statuses"),
    ("/api/v1/runs/counts?status=SUCCESS", "status"),
    ("/api/v1/runs/counts?since=soon", "since"),
    ("/api/v1/runs/1/graph?format=png", "format"),
    ("/api/v1/runs?cursor=YmVmb3JlOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "cursor"),  # 23 digits
    ("/api/v1/runs?since=0001-01-01T00:00:00%2B01:00", "since"),  # before year 1 in UTC
    ("/api/v1/runs?until=9999-12-31T23:59:59-01:00", "until"),  # after year 9999 in UTC
]
"""A path with a bad query and the parameter its error names."""


def test_bad_query_values_are_422_naming_the_parameter(daemons: Daemons) -> None:
    """A bad value, a repeated or an unknown parameter is a 422 whose problem names it."""
    port = start(daemons)
    drop(daemons.inbox, "one.json", echo_doc("one"))
    wait_result(daemons.outbox, "one")
    for path, parameter in BAD_QUERIES:
        status, body = get_json(port, path)

        assert status == 422, path
        assert parameter in body["error"], path
        assert body["problems"] and body["problems"][0].startswith(f"{parameter}: "), path


@pytest.mark.timeout(90)
def test_a_running_run_its_nodes_definition_and_graph(daemons: Daemons) -> None:
    """While ``c`` sleeps, the run's summary is built live (RUNNING, ``b``'s output, ``c``
    RUNNING, ``d`` PENDING); ``b``'s params are resolved from ``a``'s output with every
    secret redacted; ``d``'s stay as written; the definition is the stored document; the
    graph comes as Mermaid, DOT and SVG with each node's status."""
    port = start(daemons)
    drop(daemons.inbox, "chain.json", CHAIN)
    run_id = wait_running(daemons.db_path, "c")

    status, summary = get_json(port, f"/api/v1/runs/{run_id}")
    assert status == 200
    assert (summary["run_id"], summary["workflow"], summary["status"]) == (
        run_id,
        "chain",
        "RUNNING",
    )
    assert summary["source"] == "chain.json" and summary["finished_at"] is None
    assert {node_id: node["status"] for node_id, node in summary["nodes"].items()} == {
        "a": "SUCCESS",
        "b": "SUCCESS",
        "c": "RUNNING",
        "d": "PENDING",
    }
    assert summary["nodes"]["a"]["output"] == {"n": "hello", "password": "***"}
    assert summary["errors"] == []

    status, node = get_json(port, f"/api/v1/runs/{run_id}/nodes/b")
    assert status == 200
    assert node["params"] == {
        "text": "got hello",
        "copy": {"n": "hello", "password": "***"},
        "password": "***",
        "nested": {"api_key": "***", "plain": "hello"},
    }
    assert (node["run_id"], node["node_id"], node["type"], node["status"]) == (
        run_id,
        "b",
        "echo",
        "SUCCESS",
    )
    assert node["depends_on"] == ["a"] and node["attempts"] == 1
    assert node["output"] == node["params"]
    assert (node["error"], node["reason"], node["cause"]) == (None, None, None)
    _, raw = get(port, f"/api/v1/runs/{run_id}/nodes/b")
    assert b"hunter2" not in raw and b"key-123" not in raw and b"pw-of-a" not in raw

    status, pending = get_json(port, f"/api/v1/runs/{run_id}/nodes/d")
    assert status == 200
    assert pending["status"] == "PENDING" and pending["started_at"] is None
    assert pending["params"] == {"slept": "{{ c.slept }}", "api_key": "***"}

    status, definition = get_json(port, f"/api/v1/runs/{run_id}/definition")
    assert status == 200
    assert definition["name"] == "chain"
    assert [n["id"] for n in definition["nodes"]] == ["a", "b", "c", "d"]
    assert definition["nodes"][1]["params"]["password"] == "***"

    status, content_type, body = get_raw(port, f"/api/v1/runs/{run_id}/graph?format=mermaid")
    assert (status, content_type) == (200, "text/plain; charset=utf-8")
    assert '    c["c (sleep)<br/>RUNNING"]:::running' in body.decode().splitlines()
    status, content_type, body = get_raw(port, f"/api/v1/runs/{run_id}/graph?format=dot")
    assert (status, content_type) == (200, "text/vnd.graphviz; charset=utf-8")
    assert 'id="node-d", class="wfe-node status-PENDING"' in body.decode()
    status, content_type, body = get_raw(port, f"/api/v1/runs/{run_id}/graph")
    assert (status, content_type) == (200, "image/svg+xml; charset=utf-8")
    classes = _svg_classes(body)
    assert classes == {
        "node-a": "node wfe-node status-SUCCESS",
        "node-b": "node wfe-node status-SUCCESS",
        "node-c": "node wfe-node status-RUNNING",
        "node-d": "node wfe-node status-PENDING",
    }
    assert len([g for g in ET.fromstring(body).iter(f"{SVG}g") if g.get("class") == "edge"]) == 3


def _svg_classes(svg: bytes) -> dict[str, str]:
    """Each node ``<g>``'s id and classes in an SVG."""
    return {
        g.attrib["id"]: g.attrib["class"]
        for g in ET.fromstring(svg).iter(f"{SVG}g")
        if "node" in g.get("class", "").split()
    }


def test_a_finished_run_is_its_result_and_a_name_that_needs_escaping(daemons: Daemons) -> None:
    """A finished run reads as its outbox file; a workflow name full of markup comes out
    harmless in DOT, Mermaid and SVG."""
    port = start(daemons)
    name = 'say "hi" <script>&\nbye'
    drop(daemons.inbox, "odd.json", echo_doc(name))
    result = wait_result(daemons.outbox, "odd")

    status, summary = get_json(port, f"/api/v1/runs/{result['run_id']}")
    assert (status, summary) == (200, result)
    _, _, svg = get_raw(port, f"/api/v1/runs/{result['run_id']}/graph?format=svg")
    root = ET.fromstring(svg)
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert _svg_classes(svg) == {"node-a": "node wfe-node status-SUCCESS"}
    _, _, dot = get_raw(port, f"/api/v1/runs/{result['run_id']}/graph?format=dot")
    assert dot.decode().splitlines()[0] == 'digraph "say \\"hi\\" <script>&\\nbye" {'


def test_a_rejected_run_has_no_definition_nor_graph(daemons: Daemons) -> None:
    """A file that never ran reads as its summary; its definition and graph are 404s."""
    port = start(daemons)
    drop(daemons.inbox, "broken.json", b"{not json")
    result = wait_result(daemons.outbox, "broken")
    run_id = result["run_id"]

    assert get_json(port, f"/api/v1/runs/{run_id}") == (200, result)
    for path in (f"/api/v1/runs/{run_id}/definition", f"/api/v1/runs/{run_id}/graph"):
        status, body = get_json(port, path)
        assert status == 404 and str(run_id) in body["error"]


OUTSIDE = [
    "/api/v1/runs/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/runs/../../etc/passwd",
    "/api/v1/runs/%2e%2e/definition",
    "/api/v1/runs/1/nodes/..%2Fx",
    "/api/v1/runs/1/nodes/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/runs/1/nodes/a%22%3Cb%3E%0A",
    "/api/v1/runs/1/nodes/A",
    "/api/v1/runs/abc",
    "/api/v1/runs/-1",
    "/api/v1/runs/%EF%BC%91",
    "/api/v1/runs/99999999999999999999999",
    "/api/v1/runs/999",
    "/api/v1/runs/999/graph",
]
"""Paths that name no run or node, or try to climb out of the runs."""


def test_paths_outside_the_runs_are_json_404s(daemons: Daemons) -> None:
    """A run id that is not digits or not a run, a node id not in the run, and every path
    that tries to climb out: a 404 with a JSON error, nothing else."""
    port = start(daemons)
    drop(daemons.inbox, "one.json", echo_doc("one"))
    assert wait_result(daemons.outbox, "one")["run_id"] == 1
    for path in OUTSIDE:
        status, content_type, body = get_raw(port, path)

        assert (status, content_type) == (404, "application/json"), path
        assert set(json.loads(body)) == {"error", "problems"}, path
        assert b"root:" not in body, path


def test_a_database_that_cannot_be_read_is_a_503(daemons: Daemons) -> None:
    """While the runs table is gone the reads answer 503 naming the database's error, and
    answer again once it is back."""
    port = start(daemons)
    drop(daemons.inbox, "one.json", echo_doc("one"))
    run_id = wait_result(daemons.outbox, "one")["run_id"]

    execute(daemons.db_path, "ALTER TABLE workflowrun RENAME TO workflowrun_away")
    for path in ("/api/v1/runs", "/api/v1/runs/counts", f"/api/v1/runs/{run_id}"):
        status, body = get_json(port, path)
        assert status == 503, path
        assert "no such table: workflowrun" in body["error"]
    execute(daemons.db_path, "ALTER TABLE workflowrun_away RENAME TO workflowrun")
    assert [run["id"] for run in runs_page(port)["runs"]] == [run_id]


def test_tasks_lists_every_type_with_its_schema(daemons: Daemons) -> None:
    """``/api/v1/tasks`` lists the registered types, each with its description and schema."""
    port = start(daemons)
    status, body = get_json(port, "/api/v1/tasks")

    assert status == 200
    tasks = {task["type"]: task for task in body["tasks"]}
    assert {"echo", "sleep", "http_get", "shell"} <= set(tasks)
    assert all(set(task) == {"type", "description", "params_schema"} for task in body["tasks"])
    assert tasks["sleep"]["description"] == "Waits the given number of seconds."
    assert tasks["sleep"]["params_schema"]["properties"]["seconds"]["type"] == "number"


# -- the SVG drawing, in-process -------------------------------------------------------------

DIAMOND = [
    GraphNode("a", "echo"),
    GraphNode("b", "sleep", ("a",)),
    GraphNode("c", "echo", ("a",)),
    GraphNode("d", "echo", ("b", "c")),
]
STATUSES = {"a": "SUCCESS", "b": "RUNNING"}
EXPECTED = {
    "node-a": "node wfe-node status-SUCCESS",
    "node-b": "node wfe-node status-RUNNING",
    "node-c": "node wfe-node status-PENDING",
    "node-d": "node wfe-node status-PENDING",
}


async def test_graphviz_draws_the_svg_and_it_is_kept() -> None:
    """With ``dot`` installed, Graphviz draws the SVG; the same graph again is the kept copy."""
    renderer = GraphRenderer(timeout_s=30)  # a busy machine never makes it the fallback
    if renderer.dot_path is None:
        pytest.skip("Graphviz's dot is not installed")
    svg = await renderer.svg(1, "diamond", DIAMOND, STATUSES)

    assert "Generated by graphviz" in svg
    assert _svg_classes(svg.encode()) == EXPECTED
    assert await renderer.svg(1, "diamond", DIAMOND, STATUSES) is svg
    assert await renderer.svg(1, "diamond", DIAMOND, {**STATUSES, "b": "SUCCESS"}) is not svg


async def test_requests_for_one_drawing_at_once_draw_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twenty requests at once for one graph: one drawing, the others wait for it."""
    renderer = GraphRenderer(dot_path="")
    drawn = 0
    draw = renderer._draw

    async def counted(*args: Any) -> str:
        nonlocal drawn
        drawn += 1
        await asyncio.sleep(0.05)  # still drawing while the others ask
        return await draw(*args)

    monkeypatch.setattr(renderer, "_draw", counted)
    svgs = await asyncio.gather(*(renderer.svg(1, "d", DIAMOND, STATUSES) for _ in range(20)))
    assert drawn == 1
    assert len(set(svgs)) == 1


async def test_without_graphviz_the_layered_svg_is_drawn() -> None:
    """Where ``dot`` is missing the pure layout draws the graph, its nodes marked the same."""
    svg = await GraphRenderer(dot_path="").svg(1, "diamond", DIAMOND, STATUSES)

    assert "graphviz" not in svg
    assert _svg_classes(svg.encode()) == EXPECTED


async def test_the_drawings_kept_are_bounded_in_size() -> None:
    """Once the drawings kept would pass ``cache_bytes``, the oldest is let go."""
    size = len(await GraphRenderer(dot_path="").svg(1, "d", DIAMOND, STATUSES))
    renderer = GraphRenderer(dot_path="", cache_bytes=size + 10)
    first = await renderer.svg(1, "d", DIAMOND, STATUSES)
    assert await renderer.svg(1, "d", DIAMOND, STATUSES) is first
    second = await renderer.svg(2, "d", DIAMOND, STATUSES)

    assert await renderer.svg(2, "d", DIAMOND, STATUSES) is second
    assert await renderer.svg(1, "d", DIAMOND, STATUSES) is not first


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    ("body", "options"),
    [
        ("echo broken >&2; exit 3", {}),
        ("exec sleep 30", {"timeout_s": 0.3}),
        ("exec head -c 100000 /dev/zero", {"max_bytes": 1000}),
    ],
    ids=["fails", "hangs", "too-much"],
)
async def test_a_failing_dot_falls_back_to_the_layered_svg(
    tmp_path: Path, body: str, options: dict[str, Any]
) -> None:
    """A ``dot`` that fails, hangs past the timeout or writes too much gives way to the pure
    layout, and leaves no process behind."""
    pid_file = tmp_path / "pid"
    program = _script(tmp_path, "dot", f"echo $$ > {pid_file}\n{body}")
    svg = await GraphRenderer(dot_path=program, **options).svg(1, "d", DIAMOND, STATUSES)

    assert _svg_classes(svg.encode()) == EXPECTED
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
