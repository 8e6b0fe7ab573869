"""Helpers for tests that run the real daemon (``python -m wfe_daemon run``) as a subprocess.

``Daemons(tmp_path)`` starts daemons on folders inside ``tmp_path``; its ``close()`` kills and
reaps every one of them, so a failing test never leaves a process behind. Readiness is read
from a real unix datagram socket passed as ``NOTIFY_SOCKET`` (READY=1), never guessed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: ``benchmarks`` lives there, outside the installed package."""
READY_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 20.0
PAST = 1_000_000_000  # an mtime long ago: intake's settle wait does not apply


def echo_doc(name: str = "w", **extra: Any) -> dict[str, Any]:
    """A one-node workflow that succeeds at once."""
    return {"name": name, "nodes": [{"id": "a", "type": "echo", "params": {"n": name}}], **extra}


def echo_then_sleep(name: str, seconds: float, **extra: Any) -> dict[str, Any]:
    """``a`` (echo) -> ``b`` (sleep ``seconds``)."""
    return {
        "name": name,
        "nodes": [
            {"id": "a", "type": "echo", "params": {"n": name}},
            {"id": "b", "type": "sleep", "depends_on": ["a"], "params": {"seconds": seconds}},
        ],
        **extra,
    }


def drop(
    inbox: Path, name: str, doc: dict[str, Any] | bytes, *, mtime: float | None = None
) -> Path:
    """Write ``doc`` beside the inbox, then rename it in, as a well-behaved writer does."""
    staging = inbox.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{name}.{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, inbox / name)
    return inbox / name


def wait_until(predicate: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``http://127.0.0.1:<port><path>``: the status and the body (also for 4xx/5xx)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def cli(daemons: Daemons, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wfe-daemon ARGS`` with the daemons' folders (and ``env``); its outcome."""
    return subprocess.run(
        [sys.executable, "-m", "wfe_daemon", *map(str, args)],
        cwd=daemons.root,
        env=daemons.env(**env),
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


def request_json(
    port: int,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """GET ``http://127.0.0.1:<port><path>`` (POST ``body`` as JSON when given), with
    ``token`` as the bearer token if any: the status and the parsed answer (also for
    4xx/5xx)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method="GET" if data is None else "POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def post_workflow(port: int, doc: dict[str, Any], token: str) -> tuple[int, Any]:
    """POST ``doc`` to the API's submission endpoint with ``token``; status and answer."""
    return request_json(port, "/api/v1/workflows", token=token, body=doc)


def from_checkout(module: str) -> ModuleType:
    """Import ``module`` of the checkout outside ``src`` (e.g. ``benchmarks._importtime``)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(ROOT))


def small_tmpfs(root: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted at ``root / "disk"`` (skips where mounting is refused),
    unmounted afterwards: the body of the tests' small-disk fixtures."""
    mount = root / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def read_json(path: Path) -> Any:
    """Parse a JSON file; None when it is missing or (never expected) unparsable."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def wait_result(outbox: Path, stem: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait for ``outbox/<stem>.result.json`` and return it parsed."""
    return wait_until(
        lambda: read_json(outbox / f"{stem}.result.json"), timeout, f"the result of {stem}"
    )


def wait_settled(inbox: Path, name: str, *, rejected: bool = False, timeout: float = 5.0) -> Path:
    """Wait until input ``name`` is in ``processed/`` (``rejected/`` when ``rejected``); its path.

    The daemon publishes a result before it moves the input, so seeing the result does not
    mean the move happened: a test that checks where the input went waits with this.
    """
    path = inbox / ("rejected" if rejected else "processed") / name
    wait_until(path.exists, timeout, f"{name} in {path.parent.name}/")
    return path


def results(outbox: Path) -> list[Path]:
    """Every published result file in the outbox (temporary dotfiles excluded)."""
    return sorted(p for p in outbox.glob("*.json") if not p.name.startswith("."))


def query(db_path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the daemon's database (safe while it runs: WAL), as dicts."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def execute(db_path: Path, sql: str, *params: Any) -> None:
    """Run one writing statement on the database and commit it."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as conn, conn:
        conn.execute(sql, params)


def node_rows(db_path: Path, run_id: int) -> dict[str, dict[str, Any]]:
    """The noderun rows of one run, by node id."""
    rows = query(db_path, "SELECT * FROM noderun WHERE workflow_id = ?", run_id)
    return {row["node_id"]: row for row in rows}


def try_query(db_path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Like ``query`` but [] while the database is missing or busy (for polling)."""
    if not db_path.exists():
        return []
    try:
        return query(db_path, sql, *params)
    except sqlite3.OperationalError:
        return []


def wait_running(db_path: Path, node_id: str) -> int:
    """Wait until node ``node_id`` of some run is RUNNING; that run's id."""
    rows = wait_until(
        lambda: try_query(
            db_path,
            "SELECT workflow_id FROM noderun WHERE node_id = ? AND status = 'RUNNING'",
            node_id,
        ),
        15,
        f"node {node_id} running",
    )
    return int(rows[0]["workflow_id"])


@dataclass
class DaemonProcess:
    """One daemon subprocess with its output files and its notify socket."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    sock: socket.socket
    files: list[IO[bytes]]
    notices: list[str] = field(default_factory=list)
    """Every datagram received on the notify socket, in order."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        self.notices.append(data.decode())
        return self.notices[-1]

    def wait_notice(self, line: str, timeout: float = READY_TIMEOUT_S) -> str:
        """Wait for a datagram holding ``line`` (e.g. ``READY=1``); fail if the daemon exits."""
        for notice in self.notices:
            if line in notice.split("\n"):
                return notice
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            notice = self._receive(0.05)
            if notice is not None and line in notice.split("\n"):
                return notice
            if notice is None and self.proc.poll() is not None:
                # drain what was sent before exiting
                while (notice := self._receive(0)) is not None:
                    if line in notice.split("\n"):
                        return notice
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before {line}:\n{self.output()}"
                )
        raise AssertionError(f"no {line} from the daemon within {timeout}s:\n{self.output()}")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait for READY=1."""
        self.wait_notice("READY=1", timeout)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Wait for the process to end; its exit status."""
        return self.proc.wait(timeout)

    def terminate(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        """SIGTERM, then wait for the exit; its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL and reap (a no-op when already gone)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc.wait(EXIT_TIMEOUT_S)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}--- stderr ---\n{self.stderr()}"

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines on stdout (optionally only event ``name``)."""
        found = []
        for line in self.stdout().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by SIGKILL
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def close(self) -> None:
        self.kill()
        self.sock.close()
        for file in self.files:
            file.close()


class Daemons:
    """Starts daemons on ``root``'s inbox, outbox and database; ``close()`` reaps them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.data_dir = root / "data"
        self.db_path = self.data_dir / "wfe.db"
        self.started: list[DaemonProcess] = []
        self.command = [sys.executable, "-m", "wfe_daemon"]
        """How a daemon is started (``run`` follows)."""

    def env(self, **overrides: str) -> dict[str, str]:
        """The daemon's environment: every WFE_* path inside ``root``, no systemd variables."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("WFE_")
            and key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        env.update(
            WFE_INBOX=str(self.inbox),
            WFE_OUTBOX=str(self.outbox),
            WFE_DB_PATH=str(self.db_path),
            WFE_DATA_DIR=str(self.data_dir),
            WFE_LOG_LEVEL="INFO",
            # Each log line written at once: tests read a running daemon's lines as soon as
            # its results appear (the daemon's own flush would hold them up to 5 ms).
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    def spawn(self, *, notify_path: str | None = None, **env: str) -> DaemonProcess:
        """Start a daemon without waiting for it; ``notify_path`` binds a filesystem socket."""
        n = len(self.started)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if notify_path is None:
            address = f"wfe-test-{uuid.uuid4().hex}"  # abstract: no 108-byte path limit
            sock.bind("\0" + address)
            notify = "@" + address
        else:
            sock.bind(notify_path)
            notify = notify_path
        stdout_path, stderr_path = self.root / f"daemon{n}.out", self.root / f"daemon{n}.err"
        files: list[IO[bytes]] = []
        try:
            files = [stdout_path.open("wb"), stderr_path.open("wb")]
            proc = subprocess.Popen(
                [*self.command, "run"],
                cwd=self.root,
                env=self.env(NOTIFY_SOCKET=notify, **env),
                stdin=subprocess.DEVNULL,
                stdout=files[0],
                stderr=files[1],
            )
        except BaseException:
            sock.close()
            for file in files:
                file.close()
            raise
        daemon = DaemonProcess(proc, stdout_path, stderr_path, sock, files)
        self.started.append(daemon)
        return daemon

    def start(self, **env: str) -> DaemonProcess:
        """Start a daemon and wait for its READY=1."""
        daemon = self.spawn(**env)
        daemon.wait_ready()
        return daemon

    def close(self) -> None:
        """Kill and reap every daemon started, close their sockets and files."""
        for daemon in self.started:
            daemon.close()

    def assert_no_traceback(self) -> None:
        """No daemon printed a Python traceback, on stdout or stderr."""
        for n, daemon in enumerate(self.started):
            text = daemon.stdout() + daemon.stderr()
            assert "Traceback" not in text, f"daemon {n} printed a traceback:\n{daemon.output()}"


@contextlib.contextmanager
def daemons_for(root: Path) -> Iterator[Daemons]:
    """A ``Daemons`` factory for one test: no process outlives it, no traceback passes it."""
    factory = Daemons(root)
    try:
        yield factory
    finally:
        factory.close()
    factory.assert_no_traceback()
