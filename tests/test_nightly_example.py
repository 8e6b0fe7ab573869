"""examples/nightly/ run as a user would: its schedule fires at 02:30 Berlin time on a real
daemon, fetches the sales export with a bearer token from a local server, loads it into
SQLite; a failed run reaches the chat webhook twice (the workflow's own alert and the
daemon's [notify]); and no secret's value is written anywhere."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import hooked_wfe
from daemon_helpers import Daemons, daemons_for, read_json, wait_result, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nightly"
SALES_CSV = EXAMPLE.parent / "data" / "sales.csv"
NAME = "nightly-sales"


@dataclass
class Server:
    """A local HTTP server: the sales export (GET, bearer token checked) and the chat
    webhooks (POST bodies kept)."""

    token: str
    failing: bool = False
    fetches: list[dict[str, Any]] = field(default_factory=list)
    posts: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = 0


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            authorized = self.headers.get("Authorization") == f"Bearer {state.token}"
            state.fetches.append({"path": url.path, "query": parse_qs(url.query), "ok": authorized})
            if url.path != "/export/sales.csv":
                self._answer(404, b"no such export\n")
            elif not authorized:
                self._answer(401, b"bearer token needed\n")
            elif state.failing:
                self._answer(500, b"export failed\n")
            else:
                self._answer(200, SALES_CSV.read_bytes(), "text/csv")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.posts.append((self.path, body))
            self._answer(200, b"ok\n")

        def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    """The sales export and the webhooks on one real server on 127.0.0.1."""
    state = Server(token=f"sales-token-{uuid.uuid4().hex}")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _install(root: Path, server: Server) -> dict[str, str]:
    """Copy the example into ``root`` and put its secrets as the README says; the secret
    values by name."""
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
    base = f"http://127.0.0.1:{server.port}"
    secrets = {
        "sales_api_url": f"{base}/export/sales.csv",
        "sales_api_token": server.token,
        "chat_webhook": f"{base}/hooks/chat/{uuid.uuid4().hex}",
    }
    (root / "secrets").mkdir()
    for name, value in secrets.items():
        (root / "secrets" / name).write_text(value + "\n")
    notify_url = f"{base}/hooks/notify/{uuid.uuid4().hex}"
    (root / "notify_url").write_text(notify_url + "\n")
    return {**secrets, "notify_url": notify_url}


def _expected_rows() -> list[tuple[int, str, float]]:
    """What the pipeline loads from sales.csv: amounts of 100 or more, regions upper case."""
    with SALES_CSV.open(newline="") as file:
        rows = [
            (int(r["id"]), r["region"].upper(), float(r["amount"])) for r in csv.DictReader(file)
        ]
    return sorted(row for row in rows if row[2] >= 100)


def _at(clock: Path, stamp: str) -> None:
    tmp = clock.with_suffix(".tmp")
    tmp.write_text(stamp)
    tmp.replace(clock)


def _wfe(daemons: Daemons, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(hooked_wfe.HERE), *args],
        cwd=daemons.root,
        env=daemons.env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _leaks(root: Path, values: dict[str, str], skip: set[Path]) -> list[str]:
    """Where under ``root`` (files not in ``skip``) any of ``values`` appears."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path not in skip:
            data = path.read_bytes()
            found += [f"{name} in {path}" for name, v in values.items() if v.encode() in data]
    return found


@pytest.mark.timeout(60)
def test_the_nightly_example_loads_at_its_slot_alerts_on_failure_and_hides_its_secrets(
    tmp_path: Path, server: Server
) -> None:
    """The example as shipped: the 02:30 Berlin slot runs with the default day and loads
    the rows; `trigger -p day=...` against a failing export reaches the workflow's alert
    and the [notify] webhook; no secret value is in any file of the daemon or any body."""
    with daemons_for(tmp_path) as daemons:
        values = _install(tmp_path, server)
        clock = tmp_path / "clock"
        _at(clock, "2026-12-03T23:00:00+00:00")  # midnight in Berlin
        env = {
            "WFE_CONFIG": str(tmp_path / "wfe.toml"),
            "WFE_TEST_CLOCK_FILE": str(clock),  # read by the test launcher hooked_wfe
        }
        daemons.command = [sys.executable, str(hooked_wfe.HERE)]
        daemon = daemons.start(**env)
        listed = json.loads(_wfe(daemons, env, "schedules", "--json").stdout)
        assert [(s["name"], s["next"][0]) for s in listed] == [(NAME, "2026-12-04T02:30:00+01:00")]

        wait_until(lambda: daemon.events("schedule.loaded"), 10, "the schedule loaded")

        # (a) the slot
        _at(clock, "2026-12-04T01:30:01+00:00")
        slot = "20261204T023000+0100"
        result = wait_result(daemons.outbox, f"{NAME}.{slot}", timeout=20)
        assert result["status"] == "SUCCESS", result
        assert result["nodes"]["alert"]["status"] == "SKIPPED"
        assert server.fetches == [
            {
                "path": "/export/sales.csv",
                "query": {"day": ["1970-01-01"], "as_of": ["2026-12-04T02:30:00+01:00"]},
                "ok": True,
            }
        ]
        with contextlib.closing(sqlite3.connect(daemons.data_dir / "warehouse.db")) as conn:
            loaded = conn.execute("SELECT id, region, amount_eur FROM sales").fetchall()
        assert sorted((int(i), r, float(a)) for i, r, a in loaded) == _expected_rows()
        assert result["nodes"]["load"]["output"]["rows_written"] == len(loaded)
        assert server.posts == []

        # (b) a run now, for another day, while the export fails
        server.failing = True
        done = _wfe(daemons, env, "trigger", NAME, "-p", "day=2026-11-15")
        assert done.returncode == 0, done.stderr
        run_id = int(done.stdout)
        failed = wait_until(
            lambda: next(
                (
                    found
                    for path in daemons.outbox.glob(f"{NAME}.*.result.json")
                    if (found := read_json(path)) and found["run_id"] == run_id
                ),
                None,
            ),
            20,
            "the triggered run's result",
        )
        assert failed["status"] == "PARTIAL_SUCCESS", failed  # the alert node succeeded
        assert failed["nodes"]["fetch"]["status"] == "FAILED"
        assert "500" in failed["nodes"]["fetch"]["error"]
        assert failed["nodes"]["alert"]["status"] == "SUCCESS"
        assert server.fetches[-1]["query"]["day"] == ["2026-11-15"]
        wait_until(lambda: len(server.posts) >= 2, 20, "the alert and the notification")
        paths = {path.rsplit("/", 1)[0]: json.loads(body) for path, body in server.posts}
        assert set(paths) == {"/hooks/chat", "/hooks/notify"}
        alert = paths["/hooks/chat"]["text"]
        assert alert.startswith("nightly sales for 2026-11-15 (as of 2026-12-04T02:30:01+01:00,")
        assert f"run {run_id})" in alert
        notice = paths["/hooks/notify"]
        assert notice["run_id"] == run_id and notice["status"] == "PARTIAL_SUCCESS"
        assert notice["text"] == (
            f'wfe-daemon: workflow "nightly sales" (run {run_id},'
            f" {NAME}.20261204T023001+0100.json) ended PARTIAL_SUCCESS; failed: fetch"
        )
        assert notice["nodes"]["fetch"]["error"] == failed["nodes"]["fetch"]["error"]

        # (c) no secret value anywhere the daemon writes, nor in what the webhooks got
        secret_files = {tmp_path / "notify_url", *(tmp_path / "secrets").iterdir()}
        assert (daemons.db_path.parent / f"{daemons.db_path.name}-wal").exists()
        assert _leaks(tmp_path, values, secret_files) == []
        assert daemon.terminate() == 0
        assert _leaks(tmp_path, values, secret_files) == []
        bodies = b"".join(body for _, body in server.posts)
        assert [name for name, v in values.items() if v.encode() in bodies] == []
        assert "***" in failed["nodes"]["fetch"]["error"]
