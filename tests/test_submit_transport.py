"""Tests of how ``wfe-daemon submit`` and ``retry --detach`` reach the daemon: straight to
its address (never through a proxy), without loading the server's modules."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

from daemon_helpers import Daemons, echo_doc, free_port, wait_result

TOKEN = "transport-t0ken"


def test_submitting_commands_load_no_server_module(tmp_path: Path) -> None:
    """Reading the token and POSTing (here to an address where nothing listens) imports
    neither the web package nor aiohttp: the commands stay light."""
    port = free_port()
    code = (
        "import sys\n"
        "from wfe_daemon.config import load_settings\n"
        "from wfe_daemon.cli.submitting import retry_detached\n"
        "from wfe_daemon.errors import StoreError\n"
        f"settings = load_settings({{'http_port': {port}}}, {{}}, None)\n"
        "try:\n"
        "    retry_detached(settings, {'WFE_API_TOKEN': 'x'}, 1)\n"
        "except StoreError as exc:\n"
        "    print('refused:', exc, file=sys.stderr)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('aiohttp', 'wfe_daemon.web')))\n"
        "print(' '.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "cannot reach the daemon" in done.stderr
    assert done.stdout.strip() == ""


class FakeProxy:
    """A listener on 127.0.0.1 standing for an HTTP proxy: it records every connection
    (and what arrives on it) and answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(65536) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_commands_never_send_the_token_through_a_proxy(daemons: Daemons) -> None:
    """With ``http_proxy`` and ``HTTP_PROXY`` naming a listener on 127.0.0.1, ``submit`` and
    ``retry --detach`` still talk to the daemon directly: the proxy receives nothing (no
    token, no workflow) and both commands succeed."""
    port = free_port()
    env = {"WFE_HTTP_PORT": str(port), "WFE_API_TOKEN": TOKEN}
    daemons.start(**env)
    proxy = FakeProxy()
    try:
        proxied = daemons.env(
            http_proxy=f"http://127.0.0.1:{proxy.port}",
            HTTP_PROXY=f"http://127.0.0.1:{proxy.port}",
            **env,
        )
        for name in ("no_proxy", "NO_PROXY"):
            proxied.pop(name, None)
        path = daemons.root / "direct.json"
        path.write_text(json.dumps(echo_doc("w")))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "wfe_daemon", *args],
                cwd=daemons.root,
                env=proxied,
                capture_output=True,
                text=True,
                timeout=45,
                check=False,
            )

        done = cli("submit", str(path))
        assert done.returncode == 0, done.stderr
        run_id = int(done.stdout)
        assert wait_result(daemons.outbox, "direct")["run_id"] == run_id
        done = cli("retry", str(run_id), "--detach")
        assert done.returncode == 0, done.stderr
    finally:
        proxy.close()
    assert proxy.received == []


def test_a_connection_closed_after_the_request_says_it_may_have_been_taken(
    tmp_path: Path,
) -> None:
    """A daemon that reads the whole request and closes without answering (as one stopping
    may): ``submit`` exits 1 saying the daemon may have taken it, with the Idempotency-Key
    to resend with, not that no daemon runs; nothing listening at all is "cannot reach"."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def close_after_reading() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)

    server = threading.Thread(target=close_after_reading, daemon=True)
    server.start()
    path = tmp_path / "w.json"
    path.write_text(json.dumps(echo_doc("w")))
    env = {"PATH": "/usr/bin:/bin", "WFE_HTTP_PORT": str(port), "WFE_API_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "wfe_daemon", "submit", str(path), "--idempotency-key", "k-7"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    server.join(10)
    listener.close()
    assert done.returncode == 1, done.stderr
    assert "may have taken it" in done.stderr and "k-7" in done.stderr, done.stderr
    assert "cannot reach" not in done.stderr

    env["WFE_HTTP_PORT"] = str(free_port())  # nothing listens: the daemon is not there
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach" in done.stderr
