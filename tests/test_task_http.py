"""Tests for the ``http_get`` task: a real HTTP server on 127.0.0.1, driven through the engine.

No test sends traffic anywhere but 127.0.0.1, and unit tests of the pure parts use
``httpx.MockTransport``. The tests that name refused addresses (169.254.169.254 and the
like) live in ``test_task_http_refused.py``, which runs only inside a network namespace of
its own with nothing but loopback (:func:`test_refused_addresses_run_without_a_network`):
a regression there cannot reach a real address.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import ipaddress
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from daemon_helpers import PAST, Daemons, drop, results, wait_result, wait_until
from test_task_paths import unwritable
from wfe_daemon.config import Settings, load_settings
from wfe_daemon.core.model import parse_workflow
from wfe_daemon.errors import TaskFailed, WorkflowRejected
from wfe_daemon.logs import configure_logging
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Services, TaskContext
from wfe_daemon.service.submission import submit
from wfe_daemon.store.database import Store
from wfe_daemon.tasks import BUILTINS
from wfe_daemon.tasks.http.task import (
    AddressPolicy,
    HttpGetTask,
    http_client_on_demand,
    literal_address,
    open_http_client,
)

SECRET = "Bearer s3cr3t-t0ken-value"
BOMB_SIZE = 50 * 1024 * 1024


# -- the local server -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.requests.append(
            {
                "path": parts.path,
                "query": parts.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )
        route = parts.path.strip("/").split("/")
        if route[0] == "json":
            self._send(
                200,
                b'{"hello": "world", "n": [1, 2]}',
                "application/json",
                {"Set-Cookie": "session=abc", "X-Auth-Token": "tok"},
            )
        elif route[0] == "text":
            self._send(200, "héllo".encode(), "text/plain; charset=utf-8")
        elif route[0] == "csv":
            self._send(200, b"id,amount\n1,10\n2,20\n", "text/csv")
        elif route[0] == "status":
            self._send(int(route[1]), b"status body")
        elif route[0] == "query":
            self._send(200, json.dumps(parse_qs(parts.query)).encode(), "application/json")
        elif route[0] == "redirect":
            # Without ?to=, to itself: a redirect loop.
            to = parse_qs(parts.query).get("to", ["/redirect"])[0]
            self._send(302, b"", extra={"Location": to})
        elif route[0] == "big":
            self._send(200, b"x" * int(route[1]))
        elif route[0] == "bomb":
            self._send(200, self.server.bomb, extra={"Content-Encoding": "gzip"})
        elif route[0] == "trickle":
            self._trickle()
        else:
            self._other(route[0], parts.query)

    def _other(self, route: str, query: str) -> None:
        if route == "body":  # the body given in the query, as JSON
            self._send(200, parse_qs(query)["b"][0].encode(), "application/json")
        else:
            self._send(404, b"no such route")

    def _trickle(self) -> None:
        """Send headers, then one byte every 0.2 s (each read well inside any read timeout)."""
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    bomb: bytes

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is expected (timeouts, max_bytes): stay quiet."""


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    """A threaded HTTP/1.1 server on 127.0.0.1 with the routes the tests use."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests = []
    srv.bomb = gzip.compress(b"\0" * BOMB_SIZE, compresslevel=9)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def base(server: _Server) -> str:
    """The server's base URL; the request log starts empty for each test."""
    server.requests.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


# -- the engine, with the shared client -------------------------------------------------------


@pytest.fixture
async def run_nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await run_nodes(node_or_nodes, **settings)`` runs a workflow through the real engine.

    Each call submits the workflow as ``execute`` does (:func:`submit`), on a Store in
    ``tmp_path`` and one shared client from ``open_http_client``; it returns the summary and
    the INFO log lines.
    """
    logs = io.StringIO()
    configure_logging("INFO", logs)
    registry = TaskRegistry.load(BUILTINS)

    async def run(
        nodes: dict[str, Any] | list[dict[str, Any]], **overrides: Any
    ) -> tuple[dict[str, Any], str]:
        paths = {
            "db_path": tmp_path / "wfe.db",
            "data_dir": tmp_path / "data",
            "inbox": tmp_path / "inbox",
            "outbox": tmp_path / "outbox",
        }
        settings = Settings(**{**paths, **overrides})
        node_list = nodes if isinstance(nodes, list) else [nodes]
        data = json.dumps({"name": "http test", "nodes": node_list}).encode()
        async with Store.open(settings.db_path) as store, open_http_client(settings) as client:
            engine = Engine(registry, store, settings, services=Services(http=client))
            summary = await submit(
                data, registry=registry, store=store, engine=engine, source="t.json"
            )
        assert summary["status"] != "REJECTED", summary["errors"]
        return summary, logs.getvalue()

    yield run


def get(params: dict[str, Any], node_id: str = "fetch") -> dict[str, Any]:
    return {"id": node_id, "type": "http_get", "params": params}


def node(summary: dict[str, Any], node_id: str = "fetch") -> dict[str, Any]:
    result: dict[str, Any] = summary["nodes"][node_id]
    return result


def error_of(summary: dict[str, Any], node_id: str = "fetch") -> str:
    entry = node(summary, node_id)
    assert entry["status"] == "FAILED", entry
    message: str = entry["error"]
    return message


# -- success ----------------------------------------------------------------------------------


async def test_json_body(base: str, run_nodes: Callable[..., Any]) -> None:
    """A 200 JSON response gives status_code, headers, bytes, elapsed, text and json."""
    summary, _ = await run_nodes(get({"url": f"{base}/json"}))
    assert summary["status"] == "SUCCESS"
    output = node(summary)["output"]
    assert output["status_code"] == 200
    assert output["json"] == {"hello": "world", "n": [1, 2]}
    assert output["text"] == '{"hello": "world", "n": [1, 2]}'
    assert output["bytes"] == len(output["text"])
    assert output["headers"]["content-type"] == "application/json"
    assert output["headers"]["set-cookie"] == "***"
    assert output["headers"]["x-auth-token"] == "***"
    assert output["elapsed"] >= 0
    assert "path" not in output


async def test_a_cookie_set_by_one_response_is_not_sent_with_later_requests(
    server: _Server, base: str, run_nodes: Callable[..., Any]
) -> None:
    """The shared client keeps no cookies: a cookie one node received is not sent by the next."""
    summary, _ = await run_nodes(
        [
            get({"url": f"{base}/json"}, "sets"),
            {**get({"url": f"{base}/text"}, "after"), "depends_on": ["sets"]},
        ]
    )
    assert summary["status"] == "SUCCESS"
    assert [r["path"] for r in server.requests] == ["/json", "/text"]
    assert "cookie" not in server.requests[1]["headers"]


async def test_text_body_has_no_json(base: str, run_nodes: Callable[..., Any]) -> None:
    """A text body is decoded with its charset, and there is no json key."""
    summary, _ = await run_nodes(get({"url": f"{base}/text"}))
    output = node(summary)["output"]
    assert output["text"] == "héllo"
    assert "json" not in output


async def test_save_to_streams_into_data_dir(
    base: str, run_nodes: Callable[..., Any], tmp_path: Path
) -> None:
    """save_to writes the body under data_dir and returns the path as given and the size."""
    summary, _ = await run_nodes(get({"url": f"{base}/csv", "save_to": "raw/sales.csv"}))
    output = node(summary)["output"]
    saved = tmp_path / "data" / "raw" / "sales.csv"
    assert saved.read_bytes() == b"id,amount\n1,10\n2,20\n"
    assert output["path"] == "raw/sales.csv"
    assert output["bytes"] == saved.stat().st_size
    assert "text" not in output
    assert [p.name for p in saved.parent.iterdir()] == ["sales.csv"]  # no temporary left


async def test_save_to_an_unwritable_folder_names_it(
    base: str, run_nodes: Callable[..., Any], tmp_path: Path
) -> None:
    """A save_to folder that refuses new files fails the node naming the path as given,
    the folder and the reason, and says the request itself succeeded."""
    with unwritable(tmp_path / "data" / "raw") as why:
        summary, _ = await run_nodes(get({"url": f"{base}/csv", "save_to": "raw/sales.csv"}))
    assert error_of(summary) == (
        f"GET {base}/csv answered 200, but save_to: cannot write 'raw/sales.csv': "
        f"cannot create a file in the folder 'raw': {why}"
    )


@pytest.mark.parametrize("save_to", ["raw/sales.csv", "raw/2024/sales.csv"])
async def test_save_to_under_a_file_names_it(
    base: str, run_nodes: Callable[..., Any], tmp_path: Path, save_to: str
) -> None:
    """A save_to whose folder is a regular file fails the node naming the folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").write_text("a file, not a folder")
    summary, _ = await run_nodes(get({"url": f"{base}/csv", "save_to": save_to}))
    folder = save_to.rsplit("/", 1)[0]
    assert error_of(summary) == (
        f"GET {base}/csv answered 200, but save_to: cannot write {save_to!r}: "
        f"cannot create its folder {folder!r}: Not a directory"
    )


async def test_save_to_escape_refused(base: str, run_nodes: Callable[..., Any]) -> None:
    """A save_to path out of data_dir fails the node before any request."""
    summary, _ = await run_nodes(get({"url": f"{base}/csv", "save_to": "../out.csv"}))
    assert "'..'" in error_of(summary)


@pytest.mark.parametrize("save_to", ["wfe.db", "wfe.db-wal", "wfe.db-shm", "wfe.db.lock"])
async def test_save_to_cannot_replace_the_daemon_database(
    base: str, run_nodes: Callable[..., Any], server: _Server, tmp_path: Path, save_to: str
) -> None:
    """With db_path inside data_dir, save_to naming it or a companion fails before any request."""
    db = tmp_path / "data" / "wfe.db"
    summary, _ = await run_nodes(get({"url": f"{base}/csv", "save_to": save_to}), db_path=db)
    assert error_of(summary) == f"save_to: {save_to!r} is the daemon's own database; refused"
    assert server.requests == []
    assert db.read_bytes().startswith(b"SQLite format 3\x00")


async def test_save_to_writes_and_fsyncs_off_the_event_loop(
    base: str, run_nodes: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body's writes and fsync run in worker threads, a batch of chunks per write."""
    loop_thread = threading.get_ident()
    writes: list[int] = []
    fsyncs: list[int] = []
    real_fdopen, real_fsync = os.fdopen, os.fsync

    class SpyFile:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def __enter__(self) -> SpyFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._inner.close()

        def write(self, data: bytes) -> int:
            writes.append(threading.get_ident())
            return int(self._inner.write(data))

        def writelines(self, chunks: Any) -> None:
            writes.append(threading.get_ident())
            self._inner.writelines(chunks)

    def fsync(fd: int) -> None:
        fsyncs.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: SpyFile(real_fdopen(*a, **k)))
    monkeypatch.setattr(os, "fsync", fsync)
    size = 3 * 1024 * 1024 + 5
    summary, _ = await run_nodes(get({"url": f"{base}/big/{size}", "save_to": "big.bin"}))
    assert node(summary)["output"]["bytes"] == size
    assert (tmp_path / "data" / "big.bin").stat().st_size == size
    assert writes and fsyncs
    assert loop_thread not in writes + fsyncs
    assert len(writes) <= 5  # about 1 MiB per thread call, not one per network chunk


async def test_query_params(base: str, run_nodes: Callable[..., Any], server: _Server) -> None:
    """query params reach the server, lists repeating the name."""
    params = {"url": f"{base}/query", "query": {"q": "a b", "n": 3, "tag": ["x", "y"]}}
    summary, _ = await run_nodes(get(params))
    assert node(summary)["output"]["json"] == {"q": ["a b"], "n": ["3"], "tag": ["x", "y"]}
    assert server.requests[-1]["query"] == "q=a+b&n=3&tag=x&tag=y"


async def test_query_params_are_added_to_the_urls_own(
    base: str, run_nodes: Callable[..., Any], server: _Server
) -> None:
    """A URL's own query is kept byte for byte (a signed URL stays valid); ``query`` is
    appended to it (httpx alone would replace it)."""
    params = {"url": f"{base}/query?sig=a,b%2Fc&flag&q=own", "query": {"q": "added", "n": 3}}
    summary, _ = await run_nodes(get(params))
    assert node(summary)["output"]["json"] == {"sig": ["a,b/c"], "q": ["own", "added"], "n": ["3"]}
    assert server.requests[-1]["query"] == "sig=a,b%2Fc&flag&q=own&q=added&n=3"


async def test_a_redirect_loop_stops_after_ten_hops(
    base: str, run_nodes: Callable[..., Any], server: _Server
) -> None:
    """A real server that redirects to itself is asked 11 times (10 redirects), then the
    node fails naming the limit."""
    summary, _ = await run_nodes(get({"url": f"{base}/redirect"}))
    assert error_of(summary) == f"GET {base}/redirect: more than 10 redirects"
    assert [r["path"] for r in server.requests] == ["/redirect"] * 11


async def test_redirect_followed(base: str, run_nodes: Callable[..., Any]) -> None:
    """A redirect to another local path is followed."""
    summary, _ = await run_nodes(get({"url": f"{base}/redirect?to=/json"}))
    assert node(summary)["status"] == "SUCCESS", node(summary).get("error")
    assert node(summary)["output"]["json"]["hello"] == "world"


# -- status -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 500])
async def test_error_status_fails(base: str, run_nodes: Callable[..., Any], code: int) -> None:
    """A 404 or 500 fails the node with the expected and received status and the URL."""
    summary, _ = await run_nodes(get({"url": f"{base}/status/{code}"}))
    assert error_of(summary) == f"expected 2xx, got {code} from {base}/status/{code}"


async def test_expect_status_accepts_listed(base: str, run_nodes: Callable[..., Any]) -> None:
    """A 404 listed in expect_status is a success; a 200 not listed is a failure."""
    summary, _ = await run_nodes(
        [
            get({"url": f"{base}/status/404", "expect_status": [404]}, "a"),
            get({"url": f"{base}/json", "expect_status": [201, 404]}, "b"),
        ]
    )
    assert node(summary, "a")["output"]["status_code"] == 404
    assert error_of(summary, "b") == f"expected 201, 404, got 200 from {base}/json"


# -- transport failures and limits -------------------------------------------------------------


async def test_connection_refused(run_nodes: Callable[..., Any]) -> None:
    """A port with no listener fails with 'connection refused'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    summary, _ = await run_nodes(get({"url": f"http://127.0.0.1:{port}/"}))
    assert error_of(summary) == f"GET http://127.0.0.1:{port}/: connection refused"


async def test_total_timeout_on_trickle(base: str, run_nodes: Callable[..., Any]) -> None:
    """A server trickling a byte every 0.2 s fails at the total timeout, not per read."""
    started = time.perf_counter()
    summary, _ = await run_nodes(get({"url": f"{base}/trickle", "timeout": 1}))
    assert error_of(summary) == f"GET {base}/trickle timed out after 1s"
    assert time.perf_counter() - started < 5


async def test_save_to_timing_out_keeps_the_old_file(
    base: str, run_nodes: Callable[..., Any], tmp_path: Path
) -> None:
    """A save_to cut off by the timeout leaves the previous file and no temporary file."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.bin").write_bytes(b"old")
    summary, _ = await run_nodes(
        get({"url": f"{base}/trickle", "timeout": 0.5, "save_to": "t.bin"})
    )
    assert "timed out after 0.5s" in error_of(summary)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["t.bin"]
    assert (tmp_path / "data" / "t.bin").read_bytes() == b"old"


async def test_body_over_max_bytes(base: str, run_nodes: Callable[..., Any]) -> None:
    """A body larger than max_bytes fails; one exactly max_bytes passes."""
    summary, _ = await run_nodes(
        [
            get({"url": f"{base}/big/1001", "max_bytes": 1000}, "over"),
            get({"url": f"{base}/big/1000", "max_bytes": 1000}, "exact"),
        ]
    )
    assert error_of(summary, "over") == f"GET {base}/big/1001: body is over max_bytes (1000 bytes)"
    assert node(summary, "exact")["output"]["bytes"] == 1000


async def test_gzip_bomb_fails_early(
    base: str, run_nodes: Callable[..., Any], server: _Server, tmp_path: Path
) -> None:
    """A gzip body whose decoded size passes max_bytes fails, and no file is left behind."""
    assert len(server.bomb) < 100_000  # 50 MiB of zeros, compressed
    summary, _ = await run_nodes(
        get({"url": f"{base}/bomb", "max_bytes": 1_000_000, "save_to": "bomb.bin"})
    )
    assert "body is over max_bytes (1000000 bytes)" in error_of(summary)
    assert list((tmp_path / "data").glob("*bomb*")) == []


# -- refused URLs and addresses ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
async def test_non_http_scheme_refused(run_nodes: Callable[..., Any], url: str) -> None:
    """A file:// or ftp:// URL arriving through a reference fails the node at start, clearly."""
    nodes = [
        {"id": "src", "type": "echo", "params": {"url": url}},
        {**get({"url": "{{ src.url }}"}), "depends_on": ["src"]},
    ]
    summary, _ = await run_nodes(nodes)
    assert error_of(summary) == f"params: url: must be an http:// or https:// URL, got {url!r}"


async def test_task_itself_refuses_a_non_http_scheme(tmp_path: Path) -> None:
    """Called directly (no schema check), the task still refuses ftp:// before connecting."""
    async with open_http_client(Settings()) as client:
        ctx = TaskContext(1, "w", "n", 1, Settings(data_dir=tmp_path), Services(http=client))
        with pytest.raises(TaskFailed, match="only http and https URLs are allowed"):
            await HttpGetTask().execute({"url": "ftp://127.0.0.1/x"}, ctx)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://h/", "//h/x", "http:/h", "h/x"]
)
def test_literal_non_http_url_rejects_the_file(url: str) -> None:
    """A literal url that is not http(s) rejects the workflow at validation, naming the node."""
    doc = {"name": "w", "nodes": [get({"url": url})]}
    with pytest.raises(WorkflowRejected) as caught:
        parse_workflow(doc, TaskRegistry.load(BUILTINS))
    assert caught.value.problems == [
        f"node 'fetch': params: url: must be an http:// or https:// URL, got {url!r}"
    ]


@pytest.mark.parametrize("url", ["http://h/", "HTTPS://h:8443/x?q=1", "Http://[::1]/"])
def test_literal_http_urls_of_any_case_pass_validation(url: str) -> None:
    """http and https pass validation whatever their case."""
    assert TaskRegistry.load(BUILTINS).check_params("http_get", {"url": url}) == []


def test_validate_cli_rejects_an_ftp_url(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """`wfe-daemon validate` rejects a file whose http_get url is ftp://, with exit code 2."""
    path = write_workflow({"name": "w", "nodes": [get({"url": "ftp://127.0.0.1/x"})]})
    result = run_cli("validate", path)
    assert result.returncode == 2
    assert "must be an http:// or https:// URL, got 'ftp://127.0.0.1/x'" in result.stderr


async def test_deny_loopback_refuses_local_server(
    base: str, run_nodes: Callable[..., Any], server: _Server
) -> None:
    """http_deny_networks = ["loopback"] refuses 127.0.0.1 and localhost (after resolving)."""
    port = server.server_address[1]
    summary, _ = await run_nodes(
        [get({"url": f"{base}/json"}, "ip"), get({"url": f"http://localhost:{port}/json"}, "name")],
        http_deny_networks=("loopback",),
    )
    assert error_of(summary, "ip") == (
        f"GET {base}/json: 127.0.0.1 is a loopback address (http_deny_networks); refused"
    )
    assert "localhost resolves to " in error_of(summary, "name")
    assert "a loopback address (http_deny_networks); refused" in error_of(summary, "name")
    assert server.requests == []


async def test_deny_cidr_refuses(base: str, run_nodes: Callable[..., Any]) -> None:
    """A CIDR in http_deny_networks (from the config loader) refuses what it contains."""
    settings = load_settings(environ={"WFE_HTTP_DENY_NETWORKS": "127.0.0.0/24"})
    summary, _ = await run_nodes(
        get({"url": f"{base}/json"}), http_deny_networks=settings.http_deny_networks
    )
    assert "127.0.0.1 is in 127.0.0.0/24 (http_deny_networks); refused" in error_of(summary)


# -- secrets ----------------------------------------------------------------------------------


async def test_authorization_reaches_server_but_nothing_shows_it(
    base: str, run_nodes: Callable[..., Any], server: _Server, tmp_path: Path
) -> None:
    """The Authorization header reaches the server; no log line, summary or DB row holds it."""
    params = {"url": f"{base}/json", "headers": {"Authorization": SECRET, "X-Trace": "t1"}}
    summary, logs = await run_nodes(get(params))
    assert summary["status"] == "SUCCESS"
    assert server.requests[-1]["headers"]["authorization"] == SECRET
    assert server.requests[-1]["headers"]["x-trace"] == "t1"
    assert "node.finished" in logs
    assert "s3cr3t" not in logs
    assert "s3cr3t" not in json.dumps(summary)
    conn = sqlite3.connect(tmp_path / "wfe.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "noderun" in tables
    assert "s3cr3t" not in dump


async def test_authorization_absent_from_errors(base: str, run_nodes: Callable[..., Any]) -> None:
    """A failing request with an Authorization header keeps it out of the error."""
    params = {"url": f"{base}/status/500", "headers": {"Authorization": SECRET}}
    summary, logs = await run_nodes(get(params))
    assert "s3cr3t" not in error_of(summary)
    assert "s3cr3t" not in logs


async def test_secrets_in_urls_reach_the_server_but_no_message(
    base: str, run_nodes: Callable[..., Any], server: _Server, tmp_path: Path
) -> None:
    """Secret-named query values and URL passwords are sent, and shown as *** in errors.

    Whether they come from ``query``, the literal URL, a redirect's Location or userinfo,
    the error in the summary, the log lines and the database keep the names only.
    """
    with_password = base.replace("http://", "http://me:pw-s3cr3t@")
    with_token = base.replace("http://", "http://ghp_s3cr3t@")
    summary, logs = await run_nodes(
        [
            get(
                {
                    "url": f"{base}/status/404?token=tok-s3cr3t&page=2",
                    "query": {"api_key": "key-s3cr3t"},
                },
                "query",
            ),
            get({"url": f"{base}/redirect?to=/status/500%3FX-Api-Key%3Dloc-s3cr3t"}, "redirect"),
            get({"url": f"{with_password}/status/404"}, "password"),
            get({"url": f"{with_token}/status/404#access_token=frag-s3cr3t"}, "user"),
        ]
    )
    assert error_of(summary, "query") == (
        f"expected 2xx, got 404 from {base}/status/404?token=***&page=2&api_key=***"
    )
    assert error_of(summary, "redirect") == (
        f"expected 2xx, got 500 from {base}/status/500?X-Api-Key=***"
    )
    hidden = base.replace("http://", "http://***@")
    assert error_of(summary, "password") == f"expected 2xx, got 404 from {hidden}/status/404"
    assert error_of(summary, "user") == (
        f"expected 2xx, got 404 from {hidden}/status/404#access_token=***"
    )
    sent = {request["query"] for request in server.requests}
    assert {"token=tok-s3cr3t&page=2&api_key=key-s3cr3t", "X-Api-Key=loc-s3cr3t"} <= sent
    basic = "Basic " + base64.b64encode(b"me:pw-s3cr3t").decode()  # a URL's user:password
    assert any(request["headers"].get("authorization") == basic for request in server.requests)
    assert "s3cr3t" not in json.dumps(summary["nodes"])
    assert "node.finished" in logs
    assert "s3cr3t" not in logs
    conn = sqlite3.connect(tmp_path / "wfe.db")
    try:
        errors = [row[0] for row in conn.execute("SELECT error FROM noderun")]
    finally:
        conn.close()
    assert len(errors) == 4
    assert not any("s3cr3t" in error for error in errors)


# -- validation and wiring --------------------------------------------------------------------


def test_schema_rejects_bad_params() -> None:
    """Validation rejects a non-string url, unknown keys, bad status codes and max_bytes."""
    registry = TaskRegistry.load(BUILTINS)
    assert registry.check_params("http_get", {"url": 5}) == ["url: 5 is not of type 'string'"]
    assert registry.check_params("http_get", {}) == ["'url' is a required property"]
    assert registry.check_params("http_get", {"url": "http://x/", "verb": "POST"})
    assert registry.check_params("http_get", {"url": "http://x/", "expect_status": [99]})
    assert registry.check_params("http_get", {"url": "http://x/", "max_bytes": -1})
    assert registry.check_params("http_get", {"url": "http://x/", "headers": {"a": 1}})
    assert registry.check_params("http_get", {"url": "http://x/", "timeout": 0})
    assert (
        registry.check_params(
            "http_get",
            {
                "url": "http://x/",
                "headers": {"a": "b"},
                "query": {"q": [1, "a"]},
                "save_to": "f",
                "max_bytes": 0,
                "expect_status": [200],
            },
        )
        == []
    )


async def test_missing_client_fails_clearly(tmp_path: Path) -> None:
    """Without services.http, the task fails and says how to provide the client."""
    ctx = TaskContext(1, "w", "n", 1, Settings(data_dir=tmp_path), Services())
    with pytest.raises(TaskFailed, match="no HTTP client"):
        await HttpGetTask().execute({"url": "http://127.0.0.1/"}, ctx)


async def test_the_client_on_demand_opens_at_the_first_request_and_closes_at_exit(
    base: str, tmp_path: Path
) -> None:
    """``Services(open_http=...)`` builds one client when a task first asks for it, hands
    every task that same client, and the client is closed when the block ends."""
    async with http_client_on_demand(Settings(data_dir=tmp_path)) as client_of:
        services = Services(open_http=client_of)
        ctx = TaskContext(1, "w", "n", 1, Settings(data_dir=tmp_path), services)
        output = await HttpGetTask().execute({"url": f"{base}/json"}, ctx)
        client = services.http
        assert client is not None and services["http"] is client is client_of()
        assert not client.is_closed
    assert output["json"] == {"hello": "world", "n": [1, 2]}
    assert client.is_closed


def _python(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter (one that calls ``execute``), its output kept."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_execute_without_http_nodes_loads_no_http_library(
    tmp_path: Path, cli_env: dict[str, str], write_workflow: Callable[..., Path]
) -> None:
    """``execute`` of a workflow with no HTTP node imports neither httpx nor aiohttp: the
    HTTP client is opened only when a node first asks for it."""
    path = write_workflow({"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {}}]})
    code = (
        "import sys\n"
        "from wfe_daemon.cli.commands import main\n"
        f"status = main(['execute', {str(path)!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'aiohttp'))\n"
        "print(status, loaded, file=sys.stderr)\n"
    )
    done = _python(code, tmp_path, cli_env)
    assert done.stderr.splitlines()[-1] == "0 []", done.stderr
    assert json.loads(done.stdout)["status"] == "SUCCESS"


def test_execute_opens_the_client_before_the_first_nodes_timeout_starts(
    tmp_path: Path, cli_env: dict[str, str], write_workflow: Callable[..., Path], base: str
) -> None:
    """In ``execute``, opening the HTTP client (importing the HTTP libraries, slow here) is
    not charged to the first ``http_get`` node: a 0.3 s timeout is enough for its GET."""
    node = {"id": "g", "type": "http_get", "timeout": 0.3, "params": {"url": f"{base}/json"}}
    path = write_workflow({"name": "w", "nodes": [node]})
    code = (
        "import sys, time\n"
        "class SlowImport:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'aiohttp':\n"
        "            time.sleep(0.5)\n"
        "sys.meta_path.insert(0, SlowImport())\n"
        "from wfe_daemon.cli.commands import main\n"
        f"sys.exit(main(['execute', {str(path)!r}]))\n"
    )
    done = _python(code, tmp_path, cli_env)
    summary = json.loads(done.stdout)
    assert (done.returncode, summary["status"]) == (0, "SUCCESS"), summary["nodes"]["g"]


def test_execute_fails_only_the_http_node_when_the_client_cannot_open(
    tmp_path: Path, cli_env: dict[str, str], write_workflow: Callable[..., Path]
) -> None:
    """In ``execute``, an HTTP client that cannot be opened (a broken install of its library)
    fails the ``http_get`` node with the reason; the other nodes run and the summary is
    printed, with no traceback."""
    get = {"id": "g", "type": "http_get", "params": {"url": "http://127.0.0.1:9/x"}}
    path = write_workflow({"name": "w", "nodes": [get, {"id": "e", "type": "echo"}]})
    code = (
        "import sys\n"
        "class Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'aiohttp':\n"
        "            raise ImportError('aiohttp is broken')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "from wfe_daemon.cli.commands import main\n"
        f"sys.exit(main(['execute', {str(path)!r}]))\n"
    )
    done = _python(code, tmp_path, cli_env)
    assert "Traceback" not in done.stderr, done.stderr
    summary = json.loads(done.stdout)
    assert (done.returncode, summary["status"]) == (1, "PARTIAL_SUCCESS")
    assert summary["nodes"]["g"]["error"] == "ImportError: aiohttp is broken"
    assert summary["nodes"]["e"]["status"] == "SUCCESS"


def test_registry_lists_http_get() -> None:
    """The registry discovers http_get with a 60 s default timeout."""
    task = TaskRegistry.load(BUILTINS).get("http_get")
    assert task.default_timeout == 60.0
    assert task.params_schema["additionalProperties"] is False


# -- unit tests of the pure parts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2852039166", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("169.254.169.254.", "169.254.169.254"),
        ("[::ffff:a9fe:a9fe]", "::ffff:a9fe:a9fe"),
        ("127.1", "127.0.0.1"),
        ("example.com", None),
        ("1example", None),
        ("deadbeef", None),
    ],
)
def test_literal_address(host: str, expected: str | None) -> None:
    """Legacy IPv4 spellings and bracketed IPv6 are read as addresses; names are not."""
    address = literal_address(host)
    assert (str(address) if address is not None else None) == expected


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("64:ff9b::169.254.169.254", True),
        ("64:ff9b:1::a9fe:a9fe", True),
        ("2002:a9fe:a9fe::", True),
        ("::169.254.169.254", True),
        ("fe80::1%eth0", True),
        ("fd00:ec2::254", True),
        ("100.100.100.200", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),
    ],
)
def test_default_policy(address: str, refused: bool) -> None:
    """By default only link-local and metadata addresses (and their disguises) are refused."""
    ip = ipaddress.ip_address(address)
    assert (AddressPolicy.from_settings().refusal(ip) is not None) is refused


def test_named_networks() -> None:
    """'loopback' and 'private' add their ranges, IPv4-mapped forms included."""
    policy = AddressPolicy.from_settings(("loopback", "private"))
    for address in (
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.31.0.1",
        "fd12::1",
        "0.0.0.0",
    ):
        assert policy.refusal(ipaddress.ip_address(address)) is not None, address
    assert policy.refusal(ipaddress.ip_address("93.184.216.34")) is None


async def test_mock_transport_json_and_decoding(tmp_path: Path) -> None:
    """With a mock transport: deflate bodies decode, headers are listed, JSON is parsed."""
    import zlib

    def handler(request: httpx.Request) -> httpx.Response:
        body = zlib.compress(b'["a", 1]')
        return httpx.Response(200, content=body, headers={"Content-Encoding": "deflate"})

    settings = Settings(data_dir=tmp_path)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ctx = TaskContext(1, "w", "n", 1, settings, Services(http=client))
        output = await HttpGetTask().execute({"url": "http://service.test/x"}, ctx)
    assert output["json"] == ["a", 1]
    assert output["bytes"] == len(b'["a", 1]')
    assert output["headers"]["content-encoding"] == "deflate"


async def test_mock_transport_nan_is_not_json(tmp_path: Path) -> None:
    """A body with NaN is kept as text only, since the summary must stay valid JSON."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b'{"x": NaN}', headers={"Content-Type": "application/json"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ctx = TaskContext(1, "w", "n", 1, Settings(data_dir=tmp_path), Services(http=client))
        output = await HttpGetTask().execute({"url": "http://service.test/"}, ctx)
    assert output["text"] == '{"x": NaN}'
    assert "json" not in output


async def test_mock_transport_too_many_redirects(tmp_path: Path) -> None:
    """A redirect loop stops after 10 hops with a clear error."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ctx = TaskContext(1, "w", "n", 1, Settings(data_dir=tmp_path), Services(http=client))
        with pytest.raises(TaskFailed, match="more than 10 redirects"):
            await HttpGetTask().execute({"url": "http://service.test/"}, ctx)


def test_settings_field_is_a_tuple() -> None:
    """Settings keeps http_deny_networks as a tuple, so it stays hashable and frozen."""
    settings = dataclasses.replace(Settings(), http_deny_networks=["loopback"])  # type: ignore[arg-type]
    assert settings.http_deny_networks == ("loopback",)


# -- the refused-address tests, without a network -----------------------------------------------

NETNS_ENV = "WFE_TEST_NETNS"
"""Set to 1 inside the namespace where ``test_task_http_refused.py`` runs."""


def _netns_prefix() -> list[str] | None:
    """The command that runs a program in a new network namespace, or None."""
    import shutil

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    # As root a plain network namespace; otherwise inside a user namespace of our own.
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]


@pytest.mark.timeout(300)
def test_refused_addresses_run_without_a_network() -> None:
    """test_task_http_refused.py passes inside a network namespace with only loopback up
    (`unshare -n`, `ip link set lo up`), where a refused address cannot be reached."""
    import subprocess
    import sys

    if os.environ.get(NETNS_ENV) == "1":
        pytest.skip("already inside the network namespace")
    prefix = _netns_prefix()
    if prefix is None:
        pytest.skip("network namespaces need unshare (util-linux) and ip (iproute2)")
    probe = subprocess.run(
        [*prefix, "ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    module = Path(__file__).with_name("test_task_http_refused.py")
    script = 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider -n 0 "$1"'
    result = subprocess.run(
        [*prefix, "sh", "-c", script, sys.executable, str(module)],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, NETNS_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and " skipped" not in result.stdout, result.stdout


# -- outputs JSON cannot carry ----------------------------------------------------------------

UNFIT_BODIES = [
    (
        '{"a": 1267650600228229401496703205376}',
        "output.json.a: integer 1267650600228229401496703205376 does not fit in 64 bits",
    ),
    (
        '{"n": [1, -123456789012345678901234567890]}',
        "output.json.n.1: integer -123456789012345678901234567890 does not fit in 64 bits",
    ),
    ('{"s": "\\ud800"}', "output.json.s: string '\\ud800' holds a lone surrogate"),
    ('{"a": 1e999999}', "output.json.a: number inf is not a JSON number"),
]


def _unfit_doc(base: str, body: str) -> dict[str, Any]:
    """fetch (the unfit body) -> after (skipped), beside an independent ok node."""
    url = f"{base}/body?{httpx.QueryParams({'b': body})}"
    return {
        "name": "unfit",
        "nodes": [
            get({"url": url}),
            {
                "id": "after",
                "type": "echo",
                "depends_on": ["fetch"],
                "params": {"v": "{{ fetch }}"},
            },
            {"id": "ok", "type": "echo", "params": {"v": 1}},
        ],
    }


@pytest.mark.parametrize(("body", "message"), UNFIT_BODIES)
def test_execute_fails_a_node_whose_body_json_cannot_carry(
    base: str,
    run_cli: Callable[..., Any],
    write_workflow: Callable[..., Path],
    body: str,
    message: str,
) -> None:
    """A response body JSON cannot carry fails its node naming where; execute prints the summary."""
    result = run_cli("execute", write_workflow(_unfit_doc(base, body)))

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "PARTIAL_SUCCESS"
    assert summary["nodes"]["fetch"]["error"] == message
    assert summary["nodes"]["after"]["reason"] == "dependency failed: fetch"
    assert summary["nodes"]["ok"]["status"] == "SUCCESS"


def test_daemon_publishes_the_result_of_a_body_json_cannot_carry(
    base: str,
    daemons: Daemons,
) -> None:
    """A real daemon ends such a run, publishes its result and moves the file to processed/."""
    daemon = daemons.start()
    for n, (body, _) in enumerate(UNFIT_BODIES):
        drop(
            daemons.inbox, f"unfit{n}.json", json.dumps(_unfit_doc(base, body)).encode(), mtime=PAST
        )
    for n, (_, message) in enumerate(UNFIT_BODIES):
        summary = wait_result(daemons.outbox, f"unfit{n}", 20)
        assert summary["status"] == "PARTIAL_SUCCESS"
        assert summary["nodes"]["fetch"]["error"] == message
        wait_until(
            lambda n=n: (daemons.inbox / "processed" / f"unfit{n}.json").exists(),
            10,
            f"unfit{n}.json in processed/",
        )
    assert list((daemons.inbox / "processing").iterdir()) == []
    assert len(results(daemons.outbox)) == len(UNFIT_BODIES)
    assert daemon.terminate() == 0


# -- outputs are stored once, and capped ------------------------------------------------------


def test_execute_fails_an_output_over_max_output_size(
    base: str, run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """A response whose output passes max_output_size fails its node naming size and cap."""
    path = write_workflow({"name": "big", "nodes": [get({"url": f"{base}/big/3000"})]})
    result = run_cli("execute", path, env={"WFE_MAX_OUTPUT_SIZE": "2000"})
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)["nodes"]["fetch"]["error"]
    size = int(error.removeprefix("output is ").split()[0])
    assert size > 3000
    assert error == f"output is {size} bytes, over max_output_size 2000"


def test_execute_fails_an_echo_output_over_max_output_size(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """The cap counts the output's JSON bytes: a 3,000-character echo param passes a 3,000 cap."""
    doc = {"name": "big", "nodes": [{"id": "e", "type": "echo", "params": {"s": "é" * 1500}}]}
    result = run_cli("execute", write_workflow(doc), env={"WFE_MAX_OUTPUT_SIZE": "3000"})
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["nodes"]["e"]["error"] == (
        "output is 3008 bytes, over max_output_size 3000"
    )


def test_large_output_is_stored_once_and_published_whole(
    base: str, daemons: Daemons, run_cli: Callable[..., Any]
) -> None:
    """A 3 MB body under the cap is in its node row only, yet whole in the outbox and in show."""
    size = 3_000_000
    daemon = daemons.start()
    drop(
        daemons.inbox,
        "big.json",
        {"name": "big", "nodes": [get({"url": f"{base}/big/{size}"})]},
        mtime=PAST,
    )
    summary = wait_result(daemons.outbox, "big", 20)
    assert len(summary["nodes"]["fetch"]["output"]["text"]) == size
    assert daemon.terminate() == 0

    with sqlite3.connect(daemons.db_path) as conn:
        [(data_len,)] = conn.execute("SELECT length(result_data) FROM noderun").fetchall()
        [(summary_len, stored)] = conn.execute(
            "SELECT length(result_summary), result_summary FROM workflowrun"
        ).fetchall()
    conn.close()
    assert data_len > size
    assert summary_len < 10_000
    assert json.loads(stored)["nodes"]["fetch"]["output"] is None

    shown = run_cli("show", str(summary["run_id"]), "--json", env=daemons.env())
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["result_summary"] == summary
