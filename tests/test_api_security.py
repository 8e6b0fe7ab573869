"""Who may call what: the token matrix for every documented endpoint on a loopback bind and
on an address other than loopback, the refusal to start without a token on the latter, the
headers on every answer, and 200 clients at once while workflows run."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon_helpers import (
    Daemons,
    drop,
    echo_doc,
    echo_then_sleep,
    free_port,
    wait_result,
    wait_until,
)
from wfe_daemon.web.openapi import document

TOKEN = "matrix-token-0123456789"
OPEN_ON_ANY_BIND = {"/healthz"}


def call(
    port: int, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1 (a stream's body is not read): status, headers, body."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            streamed = response.headers.get("Content-Type", "").startswith("text/event-stream")
            return response.status, dict(response.headers), b"" if streamed else response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def operations(run_id: int) -> list[tuple[str, str]]:
    """Every documented (method, path), its parameters filled with a real run and node."""
    ops = []
    for path, item in document()["paths"].items():
        filled = path.replace("{run_id}", str(run_id)).replace("{node_id}", "a")
        ops.extend((method.upper(), filled) for method in item)
    return ops


def _body(method: str) -> bytes | None:
    return b"{}" if method == "POST" else None


def _finished_run(daemons: Daemons) -> int:
    drop(daemons.inbox, "m.json", echo_doc("m"))
    run_id: int = wait_result(daemons.outbox, "m")["run_id"]
    return run_id


@pytest.mark.timeout(90)
def test_loopback_without_a_token_reads_but_never_writes(daemons: Daemons) -> None:
    """On 127.0.0.1 with no token configured, every read answers without one, and every
    POST is 403 with a message saying how to configure a token."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    for method, path in operations(_finished_run(daemons)):
        status, _, body = call(port, method, path, body=_body(method))
        if method == "POST":
            assert status == 403, (path, body)
            assert "api_token_file" in json.loads(body)["error"]
        else:
            assert status not in (401, 403), (path, status, body)


@pytest.mark.timeout(90)
def test_loopback_with_a_token_needs_it_for_posts_only(daemons: Daemons) -> None:
    """On 127.0.0.1 with a token: reads are open; a POST without the token or with a wrong
    one is 401 (with ``WWW-Authenticate``), and with the right one it is let through."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    for method, path in operations(_finished_run(daemons)):
        if method != "POST":
            assert call(port, method, path)[0] not in (401, 403), path
            continue
        for wrong in (None, "wrong", TOKEN + "x", TOKEN[:-1]):
            status, headers, _ = call(port, method, path, token=wrong, body=b"{}")
            assert status == 401, (path, wrong)
            assert headers["WWW-Authenticate"].startswith("Bearer")
        assert call(port, method, path, token=TOKEN, body=b"{}")[0] not in (401, 403), path


@pytest.mark.timeout(90)
def test_any_other_bind_needs_the_token_for_reads_too(daemons: Daemons) -> None:
    """Bound to 0.0.0.0 (reached here on 127.0.0.1) with a token: every endpoint but
    ``/healthz`` is 401 without the right token and answers with it."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_HTTP_HOST="0.0.0.0", WFE_API_TOKEN=TOKEN)
    for method, path in operations(_finished_run(daemons)):
        body = _body(method)
        if path in OPEN_ON_ANY_BIND:
            assert call(port, method, path)[0] == 200
            continue
        for wrong in (None, "wrong"):
            assert call(port, method, path, token=wrong, body=body)[0] == 401, (path, wrong)
        assert call(port, method, path, token=TOKEN, body=body)[0] not in (401, 403), path


def test_any_other_bind_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    """``http_host = 0.0.0.0`` and no token: exit 2 with one line naming the fix."""
    result = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "run"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "WFE_HTTP_PORT": str(free_port()),
            "WFE_HTTP_HOST": "0.0.0.0",
            "WFE_INBOX": str(tmp_path / "inbox"),
            "WFE_OUTBOX": str(tmp_path / "outbox"),
            "WFE_DB_PATH": str(tmp_path / "wfe.db"),
            "WFE_DATA_DIR": str(tmp_path / "data"),
        },
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "0.0.0.0" in line and "api_token_file" in line and "WFE_API_TOKEN" in line


def test_the_token_file_and_the_systemd_credential(daemons: Daemons, tmp_path: Path) -> None:
    """``api_token_file`` names the token's file; a relative name is read from
    ``$CREDENTIALS_DIRECTORY``, and so is ``api_token`` when nothing is configured."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api_token").write_text("from-credential\n")
    (credentials / "other").write_text("from-named-credential\n")
    (tmp_path / "token.txt").write_text("from-file\n")
    cases = [
        ({"WFE_API_TOKEN_FILE": str(tmp_path / "token.txt")}, "from-file"),
        (
            {"WFE_API_TOKEN_FILE": "other", "CREDENTIALS_DIRECTORY": str(credentials)},
            "from-named-credential",
        ),
        ({"CREDENTIALS_DIRECTORY": str(credentials)}, "from-credential"),
    ]
    for env, token in cases:
        port = free_port()
        daemon = daemons.start(WFE_HTTP_PORT=str(port), **env)
        path = "/api/v1/workflows"
        assert call(port, "POST", path, token="nope", body=b"{}")[0] == 401
        assert call(port, "POST", path, token=token, body=b"{}")[0] == 422
        assert daemon.terminate() == 0


def test_a_token_file_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    """A missing token file: exit 2, one line naming ``api_token_file`` and the path."""
    missing = tmp_path / "nope.txt"
    result = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "run"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "WFE_HTTP_PORT": str(free_port()),
            "WFE_API_TOKEN_FILE": str(missing),
            "WFE_INBOX": str(tmp_path / "inbox"),
            "WFE_OUTBOX": str(tmp_path / "outbox"),
            "WFE_DB_PATH": str(tmp_path / "wfe.db"),
        },
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "api_token_file" in line and str(missing) in line


def test_a_loopback_bind_answers_only_a_loopback_host(daemons: Daemons) -> None:
    """On a loopback bind, a ``Host`` other than 127.0.0.1, localhost or [::1] (a page
    whose name was re-pointed at 127.0.0.1) gets 421 and no data; the loopback names work,
    and a token of bytes that are not UTF-8 is a plain 401."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    _finished_run(daemons)
    for host, expected in (
        ("evil.example.com", 421),
        (f"evil.example.com:{port}", 421),
        ("127.0.0.2", 421),
        (f"127.0.0.1:{port}", 200),
        (f"localhost:{port}", 200),
        (f"[::1]:{port}", 200),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"GET /api/v1/runs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert status == expected, (host, answer[:300])
        if expected == 421:
            assert b'"runs"' not in answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n\r\n"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]


def test_every_answer_carries_the_security_headers(daemons: Daemons) -> None:
    """Pages, JSON, errors and metrics all have the CSP and ``nosniff``; no CORS header is
    ever sent, even to a request with an ``Origin``."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    run_id = _finished_run(daemons)
    for method, path in [*operations(run_id), ("GET", "/"), ("GET", "/nowhere")]:
        _, headers, _ = call(port, method, path, body=_body(method))
        assert "default-src 'none'" in headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert not any(h.lower().startswith("access-control-") for h in headers), path


@pytest.mark.timeout(120)
def test_200_clients_at_once_lose_nothing(daemons: Daemons) -> None:
    """200 concurrent clients, half submitting and half reading, while dropped files run:
    every submission gets its result in the outbox, every read answers, and ``/healthz``
    stays 200 throughout."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    for n in range(10):
        drop(daemons.inbox, f"file{n}.json", echo_then_sleep(f"file{n}", 0.2))

    async def clients() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=200)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

            async def submit(n: int) -> dict[str, Any]:
                response = await client.post(
                    f"/api/v1/workflows?name=api{n}",
                    json=echo_doc(f"api{n}"),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                assert response.status_code == 201, response.text
                answer: dict[str, Any] = response.json()
                return answer

            async def read(n: int) -> dict[str, Any]:
                response = await client.get("/api/v1/runs?limit=20")
                assert response.status_code == 200, response.text
                assert (await client.get("/healthz")).status_code == 200
                return {}

            jobs = [submit(n) if n % 2 == 0 else read(n) for n in range(200)]
            return list(await asyncio.gather(*jobs))

    answers = [a for a in asyncio.run(clients()) if a]
    assert len(answers) == 100
    assert len({a["run_id"] for a in answers}) == 100
    for n in range(0, 200, 2):
        assert wait_result(daemons.outbox, f"api{n}", timeout=60)["status"] == "SUCCESS"
    for n in range(10):
        assert wait_result(daemons.outbox, f"file{n}", timeout=30)["status"] == "SUCCESS"
    wait_until(lambda: call(port, "GET", "/healthz")[0] == 200, 5, "healthy at the end")


def test_a_token_must_be_visible_ascii_and_is_never_echoed(tmp_path: Path) -> None:
    """A token with a control character or a space stops the start (exit 2) with a line
    that names where it came from and never shows the token itself."""
    for token in ("s3cr3t-first\nsecond", "two words", "pässwörd"):
        result = subprocess.run(
            [sys.executable, "-m", "wfe_daemon", "run"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env={
                "PATH": "/usr/bin:/bin",
                "WFE_HTTP_PORT": str(free_port()),
                "WFE_API_TOKEN": token,
                "WFE_INBOX": str(tmp_path / "inbox"),
                "WFE_OUTBOX": str(tmp_path / "outbox"),
                "WFE_DB_PATH": str(tmp_path / "wfe.db"),
            },
        )
        assert result.returncode == 2, token
        (line,) = result.stderr.splitlines()
        assert "WFE_API_TOKEN" in line and "visible ASCII" in line
        assert token.split()[0][:6] not in result.stderr


def test_a_loopback_bind_other_than_127_0_0_1_answers_its_own_address(
    daemons: Daemons,
) -> None:
    """Bound to 127.0.0.2 (loopback, reads open), requests naming that address are served;
    another host name is still 421."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_HTTP_HOST="127.0.0.2")
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/api/v1/runs", timeout=10) as answer:
        assert answer.status == 200
    with socket.create_connection(("127.0.0.2", port), timeout=10) as sock:
        sock.sendall(
            b"GET /api/v1/runs HTTP/1.1\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 421")
