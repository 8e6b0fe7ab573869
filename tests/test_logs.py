"""Log lines: one JSON object each, UTC timestamps, bound context, secrets redacted."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import structlog

from wfe_daemon.logs import FLUSH_AFTER_S, configure_logging


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_event_is_one_json_line_with_utc_timestamp_and_level() -> None:
    """An event becomes one JSON object with event, level and a UTC ISO-8601 timestamp."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    structlog.get_logger().info("workflow.started", run_id=3, workflow="w")
    (line,) = _lines(stream)
    assert line["event"] == "workflow.started"
    assert line["level"] == "info"
    assert (line["run_id"], line["workflow"]) == (3, "w")
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() == timedelta(0)


def test_bound_context_and_level_filter() -> None:
    """Context bound to a logger is in every line, and events below the level are dropped."""
    stream = io.StringIO()
    configure_logging("WARNING", stream)
    log = structlog.get_logger().bind(node_id="fetch", task_type="http_get")
    log.info("node.started")
    log.warning("node.retry", attempt=2)
    (line,) = _lines(stream)
    assert line["event"] == "node.retry"
    assert (line["node_id"], line["task_type"], line["attempt"]) == ("fetch", "http_get", 2)


async def test_lines_written_in_the_loop_are_flushed_together_soon_after() -> None:
    """Inside the event loop a line is written at once and flushed with those that follow
    it for :data:`FLUSH_AFTER_S`: one flush for many lines, over several loop turns."""
    import asyncio

    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    stream = Stream()
    configure_logging("INFO", stream)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for attempt in range(3):
        structlog.get_logger().info("node.started", attempt=attempt)
        await asyncio.sleep(0)  # a chain logs a line or two per loop turn
    assert len(_lines(stream)) == 3
    if loop.time() - began < FLUSH_AFTER_S:  # not held up by a busy machine meanwhile
        assert stream.flushes == 0
    await asyncio.sleep(FLUSH_AFTER_S * 4)  # timers fire in order: the flush's first
    assert stream.flushes == 1
    structlog.get_logger().info("node.started", attempt=3)
    await asyncio.sleep(FLUSH_AFTER_S * 4)
    assert stream.flushes == 2


class _Flushed(io.StringIO):
    """A stream that remembers how much of what was written a flush has passed on."""

    flushed = 0

    def flush(self) -> None:
        self.flushed = len(self.getvalue())

    def unflushed(self) -> str:
        return self.getvalue()[self.flushed :]


def _log_and_close(stream: _Flushed, event: str) -> None:
    """Log ``event`` on a new event loop that closes at once, its flush still pending."""
    from wfe_daemon.runtime.eventloop import new_loop

    async def log() -> None:
        structlog.get_logger().info(event)

    loop = new_loop()
    try:
        loop.run_until_complete(log())
    finally:
        loop.close()
    assert event in stream.getvalue()


def test_a_line_off_the_loop_is_flushed_after_a_loop_closed_with_a_flush_pending() -> None:
    """A loop that closes before its flush is due (the daemon's, at exit) does not keep
    the lines written after it, off any loop, in the buffer: each is flushed at once."""
    stream = _Flushed()
    configure_logging("INFO", stream)
    _log_and_close(stream, "daemon.stopped")
    structlog.get_logger().warning("eventloop.threads_left")
    assert stream.unflushed() == ""


def test_a_later_loops_lines_are_flushed_after_a_loop_closed_with_a_flush_pending() -> None:
    """A flush left pending by a closed loop is not waited for by the next loop's lines
    (a command that runs one loop after another, a thread running a loop of its own)."""
    import asyncio

    from wfe_daemon.runtime.eventloop import new_loop

    stream = _Flushed()
    configure_logging("INFO", stream)
    _log_and_close(stream, "workflow.finished")

    async def log_and_wait() -> str:
        structlog.get_logger().warning("notify.retry")
        await asyncio.sleep(FLUSH_AFTER_S * 4)
        return stream.unflushed()

    loop = new_loop()
    try:
        assert loop.run_until_complete(log_and_wait()) == ""
    finally:
        loop.close()


def test_secret_keys_are_redacted_at_any_depth() -> None:
    """Keys holding password, token, secret, authorization or api_key show as ***."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    structlog.get_logger().info(
        "workflow.received",
        api_key="k1",
        params={"headers": {"Authorization": "Bearer t"}, "items": [{"DB_PASSWORD": "p"}]},
    )
    (line,) = _lines(stream)
    assert line["api_key"] == "***"
    assert line["params"] == {
        "headers": {"Authorization": "***"},
        "items": [{"DB_PASSWORD": "***"}],
    }
    assert "Bearer" not in stream.getvalue()


def test_values_json_cannot_hold_are_shown_not_fatal() -> None:
    """A value that is not JSON (a set, a path) is rendered by repr instead of failing."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    structlog.get_logger().info("daemon.started", odd={1, 2})
    (line,) = _lines(stream)
    assert line["odd"] == "{1, 2}"


def test_text_that_is_not_unicode_is_logged_escaped() -> None:
    """A file name of undecodable bytes and a lone surrogate are shown escaped, not fatal."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    name = b"bad\xff.json".decode("utf-8", "surrogateescape")
    structlog.get_logger().warning("intake.bad_name", name=name, nested={"k": ["\ud800"]})
    (line,) = _lines(stream)
    assert line["name"] == "bad\\xff.json"
    assert line["nested"] == {"k": ["\\ud800"]}


def test_whatever_the_value_the_logger_writes_a_line_and_never_raises() -> None:
    """Nesting past the encoders' limits and an integer JSON cannot hold still give a line."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    structlog.get_logger().info("workflow.received", deep=deep, big=2**70, odd="\udcff")
    (line,) = _lines(stream)
    assert line["event"] == "workflow.received" and line["level"] == "info"
    assert line["big"] == "1180591620717411303424" and line["odd"] == "\\xff"


def test_a_closed_stream_does_not_make_logging_raise() -> None:
    """When stdout is gone (a closed pipe), a log call returns quietly."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    stream.close()
    structlog.get_logger().error("daemon.stopping")


def test_a_value_whose_repr_raises_still_gives_a_line() -> None:
    """An object whose ``repr`` raises is not shown, but its event still is."""

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

        __str__ = __repr__

    stream = io.StringIO()
    configure_logging("INFO", stream)
    structlog.get_logger().warning("node.finished", odd=Hostile())
    (line,) = _lines(stream)
    assert (line["event"], line["level"]) == ("node.finished", "warning")
    assert "Hostile" in str(line["log_error"])


async def test_a_line_buffered_stream_gets_many_lines_in_one_write() -> None:
    """On a line-buffered stream (stderr's default) the lines logged in the loop reach the
    file in one write at the flush, not one write per line."""
    import asyncio

    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            chunk = bytes(memoryview(data))  # type: ignore[arg-type]
            self.writes.append(chunk)
            return len(chunk)

    sink = Sink()
    stream = io.TextIOWrapper(io.BufferedWriter(sink), encoding="utf-8", line_buffering=True)
    configure_logging("INFO", stream)
    for attempt in range(3):
        structlog.get_logger().info("node.started", attempt=attempt)
    await asyncio.sleep(FLUSH_AFTER_S * 4)
    assert len(sink.writes) == 1
    assert [json.loads(line)["attempt"] for line in sink.writes[0].splitlines()] == [0, 1, 2]
