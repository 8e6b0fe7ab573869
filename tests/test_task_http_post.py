"""Tests for the ``http_post`` task: a real aiohttp server on 127.0.0.1, driven through the
engine with the shared client, as ``execute`` runs it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from daemon_helpers import free_port
from test_task_http import error_of, node, run_nodes
from wfe_daemon.core.model import parse_workflow
from wfe_daemon.errors import WorkflowRejected
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.tasks import BUILTINS

__all__ = ["run_nodes"]  # the fixture shared with test_task_http

SECRET = "Bearer p0st-s3cr3t"


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An aiohttp server on 127.0.0.1; ``(base URL, requests it received)``.

    ``/echo`` answers 200 with a JSON account of the request; ``/status/N`` answers N;
    ``/big/N`` N bytes; ``/to/CODE?to=URL`` redirects to URL (default ``/echo``) with that
    status.
    """
    async with _server() as served:
        yield served


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A second server as ``hook``, on another port: another origin."""
    async with _server() as served:
        yield served


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "content_type": request.headers.get("Content-Type"),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode(),
        }
        received.append(seen)
        if request.path.startswith("/status/"):
            return web.Response(status=int(request.match_info["code"]), text="nope")
        if request.path.startswith("/big/"):
            return web.Response(body=b"x" * int(request.match_info["size"]))
        if request.path.startswith("/to/"):
            code = int(request.match_info["code"])
            to = request.query.get("to", "/echo")
            return web.Response(status=code, headers={"Location": to})
        return web.json_response(seen)

    app = web.Application()
    for path in ("/echo", "/status/{code}", "/big/{size}", "/to/{code}"):
        app.router.add_route("*", path, echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


def post(params: dict[str, Any], node_id: str = "send") -> dict[str, Any]:
    return {"id": node_id, "type": "http_post", "params": params}


async def test_json_body_is_posted_and_the_answer_parsed(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """A json param is sent as application/json with POST; the JSON answer is the output's json."""
    base, received = hook
    payload = {"text": "run failed", "n": [1, 2.5, None], "ok": False}
    summary, _ = await run_nodes(post({"url": f"{base}/echo", "json": payload}))
    output = node(summary, "send")["output"]
    assert output["status_code"] == 200
    assert received[0]["method"] == "POST"
    assert received[0]["content_type"] == "application/json"
    assert json.loads(received[0]["body"]) == payload
    assert output["json"]["method"] == "POST"
    assert output["headers"]["content-type"].startswith("application/json")
    assert output["bytes"] == len(output["text"].encode())


async def test_a_reference_keeps_its_json_type_in_the_body(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """A json param that is one reference sends the referenced value, typed."""
    base, received = hook
    summary, _ = await run_nodes(
        [
            {"id": "make", "type": "echo", "params": {"rows": [1, 2], "name": "x"}},
            {**post({"url": f"{base}/echo", "json": "{{ make }}"}), "depends_on": ["make"]},
        ]
    )
    assert summary["status"] == "SUCCESS"
    assert json.loads(received[0]["body"]) == {"rows": [1, 2], "name": "x"}


async def test_form_fields_are_urlencoded(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """A form param is sent as application/x-www-form-urlencoded."""
    base, received = hook
    summary, _ = await run_nodes(post({"url": f"{base}/echo", "form": {"a": "1 2", "b": "é&"}}))
    assert summary["status"] == "SUCCESS"
    assert received[0]["content_type"] == "application/x-www-form-urlencoded"
    assert received[0]["body"] == "a=1+2&b=%C3%A9%26"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_put_and_patch(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any], method: str
) -> None:
    """method PUT or PATCH sends the body with that method."""
    base, received = hook
    summary, _ = await run_nodes(post({"url": f"{base}/echo", "method": method, "json": [1]}))
    assert summary["status"] == "SUCCESS"
    assert (received[0]["method"], received[0]["body"]) == (method, "[1]")


async def test_no_body_is_an_empty_post(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """Without json or form the request is a POST with an empty body (a trigger endpoint)."""
    base, received = hook
    summary, _ = await run_nodes(post({"url": f"{base}/echo", "query": {"go": "1"}}))
    assert summary["status"] == "SUCCESS"
    seen = received[0]
    assert (seen["method"], seen["body"], seen["query"]) == ("POST", "", "go=1")


async def test_headers_reach_the_server_and_secret_ones_show_nowhere(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any], tmp_path: Path
) -> None:
    """Headers are sent; an Authorization value stays out of logs, the summary and the database;
    a Content-Type header replaces the body's."""
    base, received = hook
    headers = {"Authorization": SECRET, "X-Trace": "t1", "Content-Type": "application/vnd.x+json"}
    summary, logs = await run_nodes(post({"url": f"{base}/big/2", "json": {}, "headers": headers}))
    assert summary["status"] == "SUCCESS"
    assert received[0]["headers"]["authorization"] == SECRET
    assert received[0]["headers"]["x-trace"] == "t1"
    assert received[0]["content_type"] == "application/vnd.x+json"
    assert "node.finished" in logs
    assert "s3cr3t" not in logs
    assert "s3cr3t" not in json.dumps(summary)
    conn = sqlite3.connect(tmp_path / "wfe.db")
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "noderun" in dump
    assert "s3cr3t" not in dump


@pytest.mark.parametrize("code", [400, 500, 503])
async def test_an_error_status_fails_the_node(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any], code: int
) -> None:
    """A non-2xx answer fails the node with http_get's message."""
    base, _ = hook
    summary, _ = await run_nodes(post({"url": f"{base}/status/{code}", "json": {}}))
    assert error_of(summary, "send") == f"expected 2xx, got {code} from {base}/status/{code}"


async def test_expect_status_accepts_what_it_lists(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """expect_status lists the codes that count as success."""
    base, _ = hook
    summary, _ = await run_nodes(
        post({"url": f"{base}/status/409", "json": {}, "expect_status": [200, 409]})
    )
    assert node(summary, "send")["output"]["status_code"] == 409


async def test_an_answer_over_max_bytes_fails(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """The answer counts against max_bytes; the error names the method."""
    base, _ = hook
    summary, _ = await run_nodes(post({"url": f"{base}/big/5000", "max_bytes": 1000}))
    assert error_of(summary, "send") == (
        f"POST {base}/big/5000: body is over max_bytes (1000 bytes)"
    )


@pytest.mark.parametrize("code", [307, 308])
async def test_307_and_308_keep_the_method_and_body(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any], code: int
) -> None:
    """A 307 or 308 is followed with the same method and body."""
    base, received = hook
    summary, _ = await run_nodes(post({"url": f"{base}/to/{code}", "json": {"a": 1}}))
    assert summary["status"] == "SUCCESS"
    assert [(r["method"], r["path"], r["body"]) for r in received] == [
        ("POST", f"/to/{code}", '{"a":1}'),
        ("POST", "/echo", '{"a":1}'),
    ]


@pytest.mark.parametrize("code", [301, 302, 303])
async def test_301_302_303_become_a_get_without_body(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any], code: int
) -> None:
    """A 301, 302 or 303 answer to a POST is followed with a GET and no body."""
    base, received = hook
    summary, _ = await run_nodes(post({"url": f"{base}/to/{code}", "json": {"a": 1}}))
    assert summary["status"] == "SUCCESS"
    assert [(r["method"], r["body"]) for r in received] == [("POST", '{"a":1}'), ("GET", "")]
    assert received[1]["content_type"] is None


@pytest.mark.parametrize(("method", "code"), [("PUT", 301), ("PATCH", 302), ("PUT", 303)])
async def test_put_and_patch_redirected_by_301_302_303_become_a_get(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any], method: str, code: int
) -> None:
    """A 301, 302 or 303 answer to a PUT or PATCH is followed with a GET without a body
    either (httpx alone keeps a PUT on a 301)."""
    base, received = hook
    summary, _ = await run_nodes(
        post({"url": f"{base}/to/{code}", "method": method, "json": {"a": 1}})
    )
    assert summary["status"] == "SUCCESS"
    assert [(r["method"], r["path"], r["body"]) for r in received] == [
        (method, f"/to/{code}", '{"a":1}'),
        ("GET", "/echo", ""),
    ]
    assert received[1]["content_type"] is None
    assert "content-length" not in received[1]["headers"]


@pytest.mark.parametrize("code", [307, 308])
async def test_a_307_or_308_to_another_origin_is_not_followed(
    hook: tuple[str, list[dict[str, Any]]],
    elsewhere: tuple[str, list[dict[str, Any]]],
    run_nodes: Callable[..., Any],
    code: int,
) -> None:
    """A 307 or 308 leading to another port (another origin) fails the node, naming only
    that origin: nothing (body, secret headers) reaches the other server."""
    base, received = hook
    other, other_received = elsewhere
    to = f"{other}/echo?token=t0k3n"
    headers = {"Authorization": SECRET, "X-Api-Key": "k3y"}
    summary, _ = await run_nodes(
        post(
            {"url": f"{base}/to/{code}", "query": {"to": to}, "json": {"a": 1}, "headers": headers}
        )
    )
    assert error_of(summary, "send") == (
        f"POST {base}/to/{code}?{urlencode({'to': to})}: answered {code} to {other},"
        " another origin: not followed, so the request and its body go only where the"
        " workflow says"
    )
    assert [r["path"] for r in received] == [f"/to/{code}"]
    assert other_received == []


@pytest.mark.parametrize("code", [301, 302, 303])
async def test_a_hop_to_another_origin_carries_no_secret_header(
    hook: tuple[str, list[dict[str, Any]]],
    elsewhere: tuple[str, list[dict[str, Any]]],
    run_nodes: Callable[..., Any],
    code: int,
) -> None:
    """A 301, 302 or 303 to another origin is followed with a GET that carries none of the
    secret-looking headers (httpx alone drops only Authorization); the others go on."""
    base, received = hook
    other, other_received = elsewhere
    headers = {
        "Authorization": SECRET,
        "X-Api-Key": "k3y",
        "X-Auth-Token": "t0k",
        "Proxy-Authorization": "Basic eA==",
        "X-Trace": "t1",
    }
    summary, _ = await run_nodes(
        post({"url": f"{base}/to/{code}", "query": {"to": f"{other}/echo"}, "headers": headers})
    )
    assert summary["status"] == "SUCCESS"
    assert received[0]["headers"]["x-api-key"] == "k3y"
    [seen] = other_received
    assert seen["method"] == "GET"
    assert seen["headers"]["x-trace"] == "t1"
    sent = set(seen["headers"])
    assert not sent & {"authorization", "x-api-key", "x-auth-token", "proxy-authorization"}


@pytest.mark.parametrize("code", [302, 307])
async def test_http_get_follows_to_another_origin_without_secret_headers(
    hook: tuple[str, list[dict[str, Any]]],
    elsewhere: tuple[str, list[dict[str, Any]]],
    run_nodes: Callable[..., Any],
    code: int,
) -> None:
    """http_get follows a 302 or 307 to another origin (a GET has no body), without its
    secret-looking headers."""
    base, _ = hook
    other, other_received = elsewhere
    get = {
        "id": "fetch",
        "type": "http_get",
        "params": {
            "url": f"{base}/to/{code}",
            "query": {"to": f"{other}/echo"},
            "headers": {"X-Api-Key": "k3y", "X-Auth-Token": "t0k", "X-Trace": "t1"},
        },
    }
    summary, _ = await run_nodes(get)
    assert summary["status"] == "SUCCESS"
    [seen] = other_received
    assert seen["method"] == "GET"
    assert seen["headers"]["x-trace"] == "t1"
    assert not set(seen["headers"]) & {"x-api-key", "x-auth-token"}


async def test_a_same_origin_307_keeps_the_secret_headers(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """Within one origin, a 307 sends the body and every header again."""
    base, received = hook
    headers = {"Authorization": SECRET, "X-Api-Key": "k3y"}
    summary, _ = await run_nodes(
        post({"url": f"{base}/to/307", "json": {"a": 1}, "headers": headers})
    )
    assert summary["status"] == "SUCCESS"
    assert received[1]["path"] == "/echo"
    assert (received[1]["headers"]["authorization"], received[1]["headers"]["x-api-key"]) == (
        SECRET,
        "k3y",
    )
    assert received[1]["body"] == '{"a":1}'


async def test_a_denied_network_is_refused_before_sending(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """http_deny_networks applies to http_post as to http_get; nothing reaches the server."""
    base, received = hook
    summary, _ = await run_nodes(
        post({"url": f"{base}/echo", "json": {}}), http_deny_networks=("loopback",)
    )
    assert error_of(summary, "send") == (
        f"POST {base}/echo: 127.0.0.1 is a loopback address (http_deny_networks); refused"
    )
    assert received == []


async def test_a_redirect_to_a_denied_address_is_refused(
    hook: tuple[str, list[dict[str, Any]]], run_nodes: Callable[..., Any]
) -> None:
    """Each redirect hop is checked: a 302 to a denied network fails naming the hop."""
    base, received = hook
    denied = f"http://203.0.113.7:{free_port()}/x"
    summary, _ = await run_nodes(
        post({"url": f"{base}/to/302", "query": {"to": denied}, "json": {}}),
        http_deny_networks=("203.0.113.0/24",),
    )
    assert error_of(summary, "send") == (
        f"GET {denied}: 203.0.113.7 is in 203.0.113.0/24 (http_deny_networks); refused"
    )
    assert [r["path"] for r in received] == ["/to/302"]


async def test_connection_refused_names_method_and_url(run_nodes: Callable[..., Any]) -> None:
    """Nothing listening: the node fails with 'connection refused'."""
    url = f"http://127.0.0.1:{free_port()}/hook"
    summary, _ = await run_nodes(post({"url": url, "json": {}}))
    assert error_of(summary, "send") == f"POST {url}: connection refused"


def test_json_and_form_together_reject_the_file() -> None:
    """A node giving both json and form is rejected, naming the rule."""
    doc = {"name": "w", "nodes": [post({"url": "http://127.0.0.1/", "json": {}, "form": {}})]}
    with pytest.raises(WorkflowRejected) as info:
        parse_workflow(json.dumps(doc).encode(), TaskRegistry.load(BUILTINS))
    assert any("give the body as json or as form, not both" in p for p in info.value.problems)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "must be an http:// or https:// URL"),
        ({"url": "http://127.0.0.1/", "method": "GET"}, "'GET' is not one of"),
        ({"url": "http://127.0.0.1/", "form": {"a": 1}}, "1 is not of type 'string'"),
        ({"url": "http://127.0.0.1/", "body": "x"}, "'body' was unexpected"),
    ],
)
def test_bad_params_reject_the_file(params: dict[str, Any], expected: str) -> None:
    """Params outside the schema reject the file with a message naming the problem."""
    doc = {"name": "w", "nodes": [post(params)]}
    with pytest.raises(WorkflowRejected) as info:
        parse_workflow(json.dumps(doc).encode(), TaskRegistry.load(BUILTINS))
    assert any(expected in p for p in info.value.problems), info.value.problems
