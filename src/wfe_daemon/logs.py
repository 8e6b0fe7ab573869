"""Logging: one JSON object per line, UTC timestamps, bound context, secrets redacted.

Event names are the contract's; they live here so every module logs the same words.
Context is bound explicitly (``log.bind(run_id=...)``, or ``ctx.log`` in a task) rather
than through contextvars: merging contextvars into every line cost more than the rest
of the pipeline on a busy engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from wfe_daemon.clock import now_iso
from wfe_daemon.core.masking import MASKER
from wfe_daemon.core.model import is_secret_key, printable, redact_secrets
from wfe_daemon.core.strictjson import INT_MAX, INT_MIN

DAEMON_STARTED = "daemon.started"
DAEMON_STOPPING = "daemon.stopping"
DAEMON_STOPPED = "daemon.stopped"
WORKFLOW_RECEIVED = "workflow.received"
WORKFLOW_REJECTED = "workflow.rejected"
WORKFLOW_DUPLICATE = "workflow.duplicate"
WORKFLOW_STARTED = "workflow.started"
WORKFLOW_FINISHED = "workflow.finished"
NODE_STARTED = "node.started"
NODE_FINISHED = "node.finished"
NODE_RETRY = "node.retry"
NODE_INTERRUPTED = "node.interrupted"  # cancelled when the shutdown grace ran out
SECRET_UNMASKED = "secret.unmasked"  # a secret too short to mask was read
PYTHON_TRACEBACK = "python.traceback"  # a python node's exception, at debug level
PYTHON_LEFT_RUNNING = "python.left_running"  # a cancelled function's thread did not stop

# Keys the engine and daemon log that never hold a secret: skipped by the redaction.
_PLAIN_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "run_id",
        "workflow",
        "node_id",
        "task_type",
        "status",
        "duration",
        "attempt",
        "error",
        "reason",
        "source",
        "nodes",
        "delay",
    }
)


def _prepare(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Level, UTC timestamp, secrets redacted at any depth, exception text: one pass a line
    (learned secret values are masked in the encoded line, by :func:`_render`)."""
    event_dict["level"] = _LEVELS.get(method, method)
    event_dict["timestamp"] = now_iso()
    if _PLAIN_KEYS.issuperset(event_dict):  # the engine's lines: nothing to redact
        return event_dict
    for key, value in event_dict.items():
        if key in _PLAIN_KEYS:
            continue
        if is_secret_key(key):
            event_dict[key] = "***"
        elif isinstance(value, dict | list):
            try:
                event_dict[key] = redact_secrets(value)
            except RecursionError:  # a log line must never raise: drop what cannot be walked
                event_dict[key] = "<too deeply nested to log>"
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    return event_dict


_LEVELS = {"warn": "warning", "exception": "error"}


def _render(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
    """One JSON object; a value JSON cannot hold is shown by its ``repr``.

    orjson: a tenth of the stdlib encoder's time, on two lines per node. Text that is not
    valid Unicode (a file name of undecodable bytes, a lone surrogate) is shown escaped
    (``bad\\xff.json``), and whatever else fails still gives a line: logging never raises.
    """
    try:
        line = orjson.dumps(event_dict, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except Exception:  # whatever a value's repr raises, a line is written
        pass
    else:  # and what a repr() shows is masked too
        return MASKER.json_text(line)
    try:
        return MASKER.json_text(
            orjson.dumps(
                _printable(event_dict), default=repr, option=orjson.OPT_NON_STR_KEYS
            ).decode()
        )
    except Exception as exc:  # e.g. a value whose repr raises
        fallback = {
            key: _printable(str(event_dict.get(key))) for key in ("event", "level", "timestamp")
        }
        fallback["log_error"] = _printable(f"{type(exc).__name__}: {exc}")
        try:
            fallback["text"] = _printable(repr(event_dict)[:_FALLBACK_CHARS])
        except Exception:
            fallback["text"] = "<the line could not be shown>"
        return MASKER.json_text(orjson.dumps(fallback).decode())


_FALLBACK_CHARS = 10_000


def _printable(value: Any, depth: int = 0) -> Any:
    """``value`` with every string made valid UTF-8 (undecodable bytes and lone surrogates
    escaped) and huge integers as text; containers are copied, to a depth encoders accept."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        return str(value)  # beyond what orjson encodes
    if depth > _MAX_DEPTH:
        return "<too deeply nested to log>"
    if isinstance(value, dict):
        return {_printable(str(key)): _printable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_printable(item, depth + 1) for item in value]
    return value


_MAX_DEPTH = 100


FLUSH_AFTER_S: Final = 0.005
"""How long a log line may wait in the buffer, on the event loop, for the lines after it."""


class _LineWriter:
    """Writes each line at once and flushes :data:`FLUSH_AFTER_S` after the first line not
    yet flushed on the running event loop (at once off the loop: in a thread, or once the
    loop has stopped).

    A busy engine logs thousands of lines a second, often one or two per loop turn (a
    chain runs one node per turn): one flush per few milliseconds instead of one per line
    or per turn saves a system call, and a wake-up of the reader (journald), per line. A
    flush is due on one loop: a loop that stops before it runs leaves the next line, on
    another loop or off any, to flush.

    A line-buffered stream (stderr, where ``execute`` logs) is switched to block buffering,
    or it would still write each line on its own. An unbuffered one (``PYTHONUNBUFFERED``
    set) is left as it is: whoever set it asked for every line at once.
    """

    def __init__(self, stream: TextIO) -> None:
        if isinstance(stream, io.TextIOWrapper) and stream.line_buffering:
            stream.reconfigure(line_buffering=False)
        self._stream = stream
        self._flush_on: asyncio.AbstractEventLoop | None = None
        """The loop a flush is due on, if any."""

    def msg(self, message: str) -> None:
        try:
            self._stream.write(message + "\n")
        except (OSError, ValueError):  # stdout gone (a closed pipe): logging must not raise
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        if self._flush_on is loop:
            return
        self._flush_on = loop
        loop.call_later(FLUSH_AFTER_S, self._flush)

    def _flush(self) -> None:
        self._flush_on = None
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    debug = info = warning = warn = error = critical = exception = log = msg


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stdout by default).

    Called once by the command line; ``execute`` passes stderr so stdout keeps the summary.
    """
    writer = _LineWriter(stream or sys.stdout)
    structlog.configure(
        processors=[_prepare, _render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=False,
    )
    # The standard library's records (asyncio's "Exception in callback", a library's
    # warning, a plugin's logger) become lines of the same pipeline, masked the same.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(handler)
    root.addHandler(_StdlibHandler(writer))
    root.setLevel(max(logging.WARNING, logging.getLevelName(level)))


class _StdlibHandler(logging.Handler):
    """Writes a ``logging`` record as a JSON line (``event`` is its message).

    Whatever a record holds, a line is written and nothing else: a custom level shows as
    the nearest standard one at or below it, a message whose arguments do not fit its
    format shows as the format with ``args`` beside it, and ``handleError`` (a traceback
    on stderr) is never called.
    """

    def __init__(self, writer: _LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        level = next((known for known in _STANDARD if known <= record.levelno), logging.DEBUG)
        fields: dict[str, Any] = {"logger": record.name}
        try:
            message = record.getMessage()
        except Exception:  # e.g. warning("%d", "x"): the format, and the arguments given
            message = _text(record.msg, str)
            fields["args"] = _text(record.args, repr)
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        try:
            structlog.get_logger().log(level, message, **fields)
        except Exception as exc:
            line = {
                "event": message,
                "level": logging.getLevelName(level).lower(),
                "timestamp": now_iso(),
                "logger": record.name,
                "log_error": f"{type(exc).__name__}: {exc}",
            }
            self._writer.msg(_render(self._writer, "error", line))


_STANDARD = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)


def _text(value: Any, show: Any) -> str:
    """``show(value)``, or a placeholder when that raises."""
    try:
        return str(show(value))
    except Exception:
        return "<cannot be shown>"
