"""Failure notifications: a real daemon (or ``execute``) POSTs run summaries to a real HTTP
server on 127.0.0.1, the ``[notify]`` table configures it, and a webhook that is down delays
nothing and gets the notification once it is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon_helpers import (
    PAST,
    Daemons,
    drop,
    echo_doc,
    echo_then_sleep,
    free_port,
    get,
    wait_result,
    wait_running,
    wait_until,
)
from wfe_daemon.config import load_settings
from wfe_daemon.core.summary import RunSummary
from wfe_daemon.core.webhook import NotifySettings
from wfe_daemon.errors import ConfigError
from wfe_daemon.service.notify import Webhook, headline, payload

TOKEN = "t0k3n-in-the-path"


def failing_doc(name: str = "broken") -> dict[str, Any]:
    """A workflow whose one node times out: the run ends FAILED."""
    node = {"id": "slow", "type": "sleep", "params": {"seconds": 5}, "timeout": 0.05}
    return {"name": name, "nodes": [node]}


class _Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HookServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.lock:
            self.server.received.append({"path": self.path, "headers": headers, "body": body})
            status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[dict[str, Any]]
    answers: list[int]
    """Statuses to answer, in order; 200 once used up. A 429 says ``Retry-After: 1``."""
    lock: threading.Lock

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.received]


@contextmanager
def webhook_server(port: int = 0, answers: list[int] | None = None) -> Iterator[_HookServer]:
    """A webhook on 127.0.0.1 recording every POST; shut down on exit."""
    server = _HookServer(("127.0.0.1", port), _Hook)
    server.received, server.answers, server.lock = [], list(answers or []), threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def hook() -> Iterator[_HookServer]:
    """A webhook server on a free port of 127.0.0.1."""
    with webhook_server() as server:
        yield server


def url_of(server: _HookServer, path: str = f"/services/{TOKEN}") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the daemon -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_failed_run_is_posted_and_a_successful_one_is_not(
    daemons: Daemons, hook: _HookServer
) -> None:
    """With the default `on`, the webhook gets the FAILED run's summary (as in the outbox, plus
    a text line), not the SUCCESS one's; the log and /metrics count it; the token in the
    URL's path shows nowhere in the log."""
    port = free_port()
    daemon = daemons.start(WFE_NOTIFY_URL=url_of(hook), WFE_HTTP_PORT=str(port))
    drop(daemons.inbox, "fine.json", echo_doc("fine"), mtime=PAST)
    assert wait_result(daemons.outbox, "fine")["status"] == "SUCCESS"
    drop(daemons.inbox, "broken.json", failing_doc(), mtime=PAST)
    result = wait_result(daemons.outbox, "broken")
    assert result["status"] == "FAILED"
    wait_until(lambda: daemon.events("notify.sent"), 15, "notify.sent")
    [received] = hook.received  # one sender, in order: the success would have come first
    assert received["path"] == f"/services/{TOKEN}"
    assert received["headers"]["content-type"] == "application/json"
    assert received["headers"]["user-agent"].startswith("wfe-daemon/")
    body = json.loads(received["body"])
    assert body.pop("text") == (
        f'wfe-daemon: workflow "broken" (run {result["run_id"]}, broken.json) ended FAILED;'
        " failed: slow"
    )
    assert body == result
    [sent] = daemon.events("notify.sent")
    assert sent["level"] == "info"
    assert sent["run_id"] == result["run_id"]
    assert sent["webhook"] == f"http://127.0.0.1:{hook.server_address[1]}"
    status, metrics = get(port, "/metrics")
    assert status == 200
    assert b'wfe_notifications_total{outcome="sent"} 1.0' in metrics
    assert daemon.terminate() == 0
    assert TOKEN not in daemon.stdout() + daemon.stderr()


@pytest.mark.timeout(90)
def test_url_file_from_credentials_on_and_headers(
    daemons: Daemons, hook: _HookServer, tmp_path: Path
) -> None:
    """`url_file` is read from $CREDENTIALS_DIRECTORY; `on` may name SUCCESS; `headers` are
    sent, and a secret one is never logged."""
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "hook_url").write_text(url_of(hook) + "\n")
    config = write_toml(
        tmp_path / "wfe.toml",
        '[notify]\nurl_file = "hook_url"\non = ["success"]\n'
        '[notify.headers]\nAuthorization = "Bearer h3ad3r-s3cret"\nX-Team = "data"\n',
    )
    daemon = daemons.start(WFE_CONFIG=str(config), CREDENTIALS_DIRECTORY=str(credentials))
    drop(daemons.inbox, "broken.json", failing_doc(), mtime=PAST)
    wait_result(daemons.outbox, "broken")
    drop(daemons.inbox, "fine.json", echo_doc("fine"), mtime=PAST)
    result = wait_result(daemons.outbox, "fine")
    wait_until(lambda: daemon.events("notify.sent"), 15, "notify.sent")
    assert [body["run_id"] for body in hook.bodies()] == [result["run_id"]]
    headers = hook.received[0]["headers"]
    assert (headers["authorization"], headers["x-team"]) == ("Bearer h3ad3r-s3cret", "data")
    assert daemon.terminate() == 0
    assert "h3ad3r" not in daemon.stdout() + daemon.stderr()


@pytest.mark.timeout(90)
def test_a_webhook_down_at_first_gets_the_notification_once_up(
    daemons: Daemons, tmp_path: Path
) -> None:
    """While the webhook is down the result is published at once and each failed try is logged
    at warning; once it listens, the next try delivers the same summary."""
    port = free_port()
    config = write_toml(tmp_path / "wfe.toml", "[notify]\nattempts = 50\nretry_delay = 0.1\n")
    url = f"http://127.0.0.1:{port}/hook"
    daemon = daemons.start(WFE_CONFIG=str(config), WFE_NOTIFY_URL=url)
    drop(daemons.inbox, "broken.json", failing_doc(), mtime=PAST)
    result = wait_result(daemons.outbox, "broken")  # published while the webhook is down
    failed = wait_until(lambda: daemon.events("notify.failed"), 15, "notify.failed")
    assert failed[0]["level"] == "warning"
    assert failed[0]["error"] == "connection refused"
    assert failed[0]["run_id"] == result["run_id"]
    with webhook_server(port) as server:
        sent = wait_until(lambda: daemon.events("notify.sent"), 15, "notify.sent")
        assert [body["run_id"] for body in server.bodies()] == [result["run_id"]]
    assert sent[0]["attempt"] > 1
    assert daemon.events("notify.dropped") == []
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_an_error_answer_is_retried_and_a_client_error_is_final(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A 503 is tried again, a 429 after its Retry-After; a 400 is given up at once
    (notify.dropped), and the next notification is still sent."""
    config = write_toml(tmp_path / "wfe.toml", "[notify]\nretry_delay = 0.05\n")
    with webhook_server(answers=[503, 429, 200, 400]) as server:
        daemon = daemons.start(WFE_CONFIG=str(config), WFE_NOTIFY_URL=url_of(server))
        drop(daemons.inbox, "one.json", failing_doc("one"), mtime=PAST)
        wait_until(lambda: daemon.events("notify.sent"), 15, "the first notification")
        drop(daemons.inbox, "two.json", failing_doc("two"), mtime=PAST)
        dropped = wait_until(lambda: daemon.events("notify.dropped"), 15, "notify.dropped")
        assert len(server.received) == 4
    assert dropped[0]["reason"] == "the webhook answered 400; not tried again"
    assert dropped[0]["level"] == "warning"
    failed = [(e["error"], e["delay"]) for e in daemon.events("notify.failed")]
    assert failed == [("the webhook answered 503", 0.05), ("the webhook answered 429", 1.0)]
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_shutdown_drops_what_the_webhook_did_not_take(daemons: Daemons, tmp_path: Path) -> None:
    """SIGTERM while the webhook is down: the daemon stops within its grace and logs the
    notification it could not send."""
    port = free_port()
    config = write_toml(tmp_path / "wfe.toml", "[notify]\nretry_delay = 0.2\n")
    daemon = daemons.start(
        WFE_CONFIG=str(config), WFE_NOTIFY_URL=f"http://127.0.0.1:{port}/", WFE_SHUTDOWN_GRACE="2"
    )
    drop(daemons.inbox, "broken.json", failing_doc(), mtime=PAST)
    result = wait_result(daemons.outbox, "broken")
    wait_until(lambda: daemon.events("notify.failed"), 15, "notify.failed")
    assert daemon.terminate() == 0
    [dropped] = daemon.events("notify.dropped")
    assert dropped["run_id"] == result["run_id"]
    assert dropped["reason"] == "the daemon stopped before it was sent"


def test_a_missing_url_file_stops_the_daemon_with_one_line(
    daemons: Daemons, tmp_path: Path
) -> None:
    """An unreadable url_file is a configuration error at start: exit 2, one line naming it."""
    daemon = daemons.spawn(
        WFE_NOTIFY_URL_FILE="absent", CREDENTIALS_DIRECTORY=str(tmp_path / "creds")
    )
    assert daemon.wait_exit() == 2
    assert daemon.stderr().strip() == (
        f"wfe-daemon: config: notify.url_file: cannot read {tmp_path}/creds/absent:"
        " No such file or directory"
    )


@pytest.mark.parametrize(
    ("env", "toml", "expected"),
    [
        (
            {"WFE_NOTIFY_URL": "http://127.0.0.1:99999/t0k3n"},
            "",
            "wfe-daemon: config: WFE_NOTIFY_URL: must be an http:// or https:// URL",
        ),
        (
            {"WFE_NOTIFY_URL": "http://127.0.0.1:0x/t0k3n"},
            "",
            "wfe-daemon: config: WFE_NOTIFY_URL: must be an http:// or https:// URL",
        ),
        (
            {"WFE_NOTIFY_URL": "http://127.0.0.1:9/t0k3n"},
            '[notify.headers]\nX-Team = "café"\n',
            "wfe-daemon: config: {config}: notify.headers.X-Team: must be a string of printable",
        ),
        (
            {"WFE_NOTIFY_URL": "http://127.0.0.1:9/t0k3n", "WFE_NOTIFY_ON": ""},
            "",
            "wfe-daemon: config: WFE_NOTIFY_ON: must name at least one run status",
        ),
    ],
)
def test_a_bad_webhook_stops_the_daemon_with_one_line(
    daemons: Daemons, tmp_path: Path, env: dict[str, str], toml: str, expected: str
) -> None:
    """A port out of range or unreadable, a header value that is not ASCII, an empty `on`:
    exit 2 with one line naming the key, no traceback, the URL never shown."""
    config = write_toml(tmp_path / "wfe.toml", toml)
    daemon = daemons.spawn(WFE_CONFIG=str(config), **env)
    assert daemon.wait_exit() == 2
    [line] = daemon.stderr().splitlines()
    assert line.startswith(expected.format(config=config)), line
    assert "t0k3n" not in daemon.output()
    assert "Traceback" not in daemon.output()


ONE_URL = (
    "must hold one http:// or https:// URL with a host and a valid port, on one line"
    " (its contents are not shown)"
)


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        ("http://127.0.0.1:99999/t0k3n\n", ONE_URL),
        ("http://127.0.0.1:9/t0k3n two\n", ONE_URL),
        ("http://127.0.0.1:9/t0k3n\nhttp://127.0.0.1:9/b\n", ONE_URL),
        (None, "is not a regular file (a named pipe)"),
    ],
)
def test_a_bad_url_file_stops_the_daemon_with_one_line(
    daemons: Daemons, tmp_path: Path, contents: str | None, expected: str
) -> None:
    """url_file is checked as `url` is (a bad port, a space, two lines are refused), and a
    named pipe is refused without blocking start-up: exit 2, one line, contents unshown."""
    path = tmp_path / "hook_url"
    if contents is None:
        os.mkfifo(path)
    else:
        path.write_text(contents)
    daemon = daemons.spawn(WFE_NOTIFY_URL_FILE=str(path))
    assert daemon.wait_exit() == 2
    assert daemon.stderr() == f"wfe-daemon: config: notify.url_file: {path} {expected}\n"
    assert "t0k3n" not in daemon.output()


@pytest.mark.timeout(90)
def test_a_second_sigterm_logs_the_queued_notifications_as_dropped(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A second SIGTERM stops the daemon without its grace: the notification still waiting
    for a webhook that is down is logged as dropped, not lost silently."""
    port = free_port()
    config = write_toml(tmp_path / "wfe.toml", "[notify]\nretry_delay = 0.2\n")
    daemon = daemons.start(
        WFE_CONFIG=str(config), WFE_NOTIFY_URL=f"http://127.0.0.1:{port}/", WFE_SHUTDOWN_GRACE="30"
    )
    drop(daemons.inbox, "broken.json", failing_doc(), mtime=PAST)
    result = wait_result(daemons.outbox, "broken")
    wait_until(lambda: daemon.events("notify.failed"), 15, "notify.failed")
    drop(daemons.inbox, "long.json", echo_then_sleep("long", 60), mtime=PAST)
    wait_running(daemons.db_path, "b")
    daemon.proc.terminate()
    daemon.wait_notice("STOPPING=1", timeout=5)
    daemon.proc.terminate()
    assert daemon.wait_exit() == 0
    [dropped] = daemon.events("notify.dropped")
    assert dropped["run_id"] == result["run_id"]
    assert dropped["reason"] == "the daemon stopped before it was sent"


# -- execute ----------------------------------------------------------------------------------


def test_execute_notifies_only_when_asked(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path], hook: _HookServer
) -> None:
    """`execute` alone never calls the webhook; `execute --notify` does, after printing the
    summary, and keeps the run's exit status."""
    path = write_workflow(failing_doc())
    env = {"WFE_NOTIFY_URL": url_of(hook)}
    plain = run_cli("execute", path, env=env)
    assert plain.returncode == 1
    assert hook.received == []
    told = run_cli("execute", path, "--notify", env=env)
    assert told.returncode == 1, told.stderr
    summary = json.loads(told.stdout)
    assert [body["run_id"] for body in hook.bodies()] == [summary["run_id"]]
    assert '"event":"notify.sent"' in told.stderr
    fine = run_cli("execute", write_workflow(echo_doc()), "--notify", env=env)
    assert fine.returncode == 0
    assert len(hook.received) == 1  # SUCCESS is not in the default `on`


def test_execute_notify_with_a_bad_webhook_runs_nothing(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """`execute --notify` with a webhook whose port is out of range exits 2 before running
    anything, with one line and no traceback."""
    path = tmp_path / "hook_url"
    path.write_text("https://hooks.example:70000/t0k3n\n")
    done = run_cli(
        "execute", write_workflow(echo_doc()), "--notify", env={"WFE_NOTIFY_URL_FILE": str(path)}
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"wfe-daemon: config: notify.url_file: {path} must hold one http:// or https:// URL"
    )
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


@pytest.mark.timeout(60)
def test_ctrl_c_during_execute_notify_retries_exits_130_and_logs_the_drop(
    cli_env: dict[str, str], write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """Ctrl-C while `execute --notify` retries a webhook that is down: the summary is out,
    the notification is logged as dropped, and the exit status is 130."""
    env = {
        **cli_env,
        "WFE_NOTIFY_URL": f"http://127.0.0.1:{free_port()}/{TOKEN}",
        "WFE_CONFIG": str(write_toml(tmp_path / "wfe.toml", "[notify]\nretry_delay = 0.2\n")),
    }
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wfe_daemon",
                "execute",
                str(write_workflow(failing_doc())),
                "--notify",
            ],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            wait_until(lambda: "notify.failed" in err.read_text(), 30, "notify.failed")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(15) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert json.loads(out.read_text())["status"] == "FAILED"
    events = [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{")]
    [dropped] = [e for e in events if e["event"] == "notify.dropped"]
    assert dropped["reason"] == "stopped before it was sent"
    assert TOKEN not in err.read_text()


def test_execute_notify_without_a_webhook_is_a_usage_error(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """`execute --notify` with no [notify] webhook exits 2 before running anything."""
    done = run_cli("execute", write_workflow(echo_doc()), "--notify")
    assert done.returncode == 2
    assert done.stderr == (
        "wfe-daemon: --notify: no webhook configured: set [notify] url or url_file\n"
    )
    assert done.stdout == ""


# -- the pieces -------------------------------------------------------------------------------


def _summary(run_id: int, status: str = "FAILED") -> RunSummary:
    return {
        "run_id": run_id,
        "workflow": "w",
        "source": "w.json",
        "status": status,
        "started_at": "2026-01-01T00:00:00.000000+00:00",
        "finished_at": "2026-01-01T00:00:01.000000+00:00",
        "duration": 1.0,
        "nodes": {"a": {"type": "echo", "status": "SUCCESS", "output": "x" * 2_000_000}},
        "errors": [],
    }


async def test_a_full_queue_drops_the_oldest_with_a_warning() -> None:
    """Offering to a full queue never blocks: the oldest notification is dropped and logged."""
    webhook = Webhook(
        NotifySettings(url="http://127.0.0.1:9/"), "http://127.0.0.1:9/", queue_size=2
    )
    outcomes: list[str] = []
    webhook.hooks.append(outcomes.append)
    with capture_logs() as logs:
        for run_id in (1, 2, 3):
            webhook.offer(_summary(run_id))
        webhook.offer(_summary(4, "SUCCESS"))  # not in `on`: never queued
    assert webhook.pending() == 2
    assert [(e["event"], e["run_id"], e["log_level"]) for e in logs] == [
        ("notify.dropped", 1, "warning")
    ]
    assert outcomes == ["dropped"]
    assert webhook.abandon("stopping") == 2


async def test_the_queue_keeps_encoded_bodies_within_its_byte_budget() -> None:
    """The queue holds each notification as its encoded body (a 2 MB output is left out),
    and past its byte budget drops the oldest with a warning."""
    size = len(payload(_summary(1)))
    assert size < 10_000  # the 2 MB output is not kept
    webhook = Webhook(
        NotifySettings(url="http://127.0.0.1:9/"), "http://127.0.0.1:9/", queue_bytes=2 * size
    )
    with capture_logs() as logs:
        for run_id in (1, 2, 3):
            webhook.offer(_summary(run_id))
    assert webhook.pending() == 2
    assert webhook.queued_bytes() == 2 * size
    assert [(e["event"], e["run_id"]) for e in logs] == [("notify.dropped", 1)]
    assert logs[0]["reason"].startswith("the queue is full")


@pytest.mark.parametrize(
    ("url", "headers", "expected"),
    [
        ("http://127.0.0.1:99999/t0k3n", {}, "config: notify.url: not a URL that can be sent"),
        ("http://127.0.0.1:0x/t0k3n", {}, "config: notify.url: not a URL that can be sent"),
        ("http://127.0.0.1:9/t0k3n", {"X-Team": "café"}, "config: notify.headers: a header"),
    ],
)
async def test_a_webhook_that_cannot_be_sent_is_a_config_error(
    url: str, headers: dict[str, str], expected: str
) -> None:
    """Settings built without the TOML checks still fail when the Webhook is made, before
    anything runs, as a ConfigError that shows neither the URL nor the value."""
    with pytest.raises(ConfigError) as info:
        Webhook(NotifySettings(url=url, headers=headers), url)
    assert str(info.value).startswith(expected)
    assert "t0k3n" not in str(info.value) and "café" not in str(info.value)


def test_a_large_summary_is_sent_without_its_outputs() -> None:
    """A summary over 1 MiB as JSON goes without node outputs, and says so."""
    body = json.loads(payload(_summary(7)))
    assert body["outputs_omitted"] is True
    assert body["nodes"]["a"] == {"type": "echo", "status": "SUCCESS"}
    assert body["text"] == headline(_summary(7))


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[notify]\non = ["BROKEN"]', "notify.on: must be run statuses (SUCCESS,"),
        ('[notify]\non = ["RUNNING"]', "notify.on: must be run statuses"),
        ('[notify]\nurl = "ftp://h/x?token=abc"', "notify.url: must be an http:// or https:// URL"),
        ('[notify]\nurl = "http://a/"\nurl_file = "f"', "notify: give url or url_file, not both"),
        ("[notify]\nattempts = 0", "notify.attempts: must be >= 1, got 0"),
        ("[notify]\nretry_delay = -1", "notify.retry_delay: must be > 0, got -1"),
        ('[notify]\ntimeout = "soon"', "notify.timeout: must be a number, got 'soon'"),
        ("[notify]\nurls = 1", "notify.urls: unknown key (known: url, url_file, on,"),
        ("[notify.headers]\nX-A = 1", "notify.headers.X-A: must be a string of printable ASCII"),
        (
            '[notify.headers]\nX-Team = "café"',
            "notify.headers.X-Team: must be a string of printable",
        ),
        ('[notify]\nurl = "http://h:99999/abc"', "notify.url: must be an http:// or https:// URL"),
        ('[notify]\nurl = "http://h:0x/abc"', "notify.url: must be an http:// or https:// URL"),
        ('[notify]\nurl = "http://h/abc def"', "notify.url: must be an http:// or https:// URL"),
        ("[notify]\non = []", "notify.on: must name at least one run status (to send nothing,"),
        ("[notify]\nretry_delay = 301", "notify.retry_delay: must be <= 300 (seconds), got 301"),
        ('[notify.headers]\n"a b" = "x"', "notify.headers: not a header name: 'a b'"),
        ('notify = "http://a/"', "notify: must be a table"),
    ],
)
def test_bad_notify_values_name_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    """Each bad [notify] value is one line naming the file and the key, never the URL."""
    path = write_toml(tmp_path / "bad.toml", toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, toml_path=path)
    message = str(info.value)
    assert message.startswith(f"config: {path}: {expected}"), message
    assert "abc" not in message and "\n" not in message


def test_notify_environment_overrides_the_file(tmp_path: Path) -> None:
    """WFE_NOTIFY_URL replaces the file's url_file; WFE_NOTIFY_ON is a comma list."""
    path = write_toml(tmp_path / "a.toml", '[notify]\nurl_file = "x"\nattempts = 3\n')
    settings = load_settings(
        environ={
            "WFE_NOTIFY_URL": "https://hooks.example/T/B",
            "WFE_NOTIFY_ON": "failed,CANCELLED",
        },
        toml_path=path,
    )
    assert settings.notify == NotifySettings(
        url="https://hooks.example/T/B", on=("FAILED", "CANCELLED"), attempts=3
    )
    assert load_settings(environ={}).notify.enabled is False
    with pytest.raises(ConfigError, match=r"^config: WFE_NOTIFY_ON: must be run statuses"):
        load_settings(environ={"WFE_NOTIFY_ON": "FAILED,LATE"})
    with pytest.raises(ConfigError, match=r"^config: WFE_NOTIFY_ON: must name at least one"):
        load_settings(environ={"WFE_NOTIFY_ON": ""})
