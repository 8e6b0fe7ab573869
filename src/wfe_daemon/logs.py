"""Logging: one JSON object per line, UTC timestamps, bound context, secrets redacted.

Event names are the contract's; they live here so every module logs the same words.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from wfe_daemon.model import is_secret_key, redact_secrets

DAEMON_STARTED = "daemon.started"
DAEMON_STOPPING = "daemon.stopping"
WORKFLOW_RECEIVED = "workflow.received"
WORKFLOW_REJECTED = "workflow.rejected"
WORKFLOW_DUPLICATE = "workflow.duplicate"
WORKFLOW_STARTED = "workflow.started"
WORKFLOW_FINISHED = "workflow.finished"
NODE_STARTED = "node.started"
NODE_FINISHED = "node.finished"
NODE_RETRY = "node.retry"


def _redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any secret-looking key, at any depth, with ``***``."""
    for key, value in event_dict.items():
        if is_secret_key(key):
            event_dict[key] = "***"
        elif isinstance(value, dict | list):
            event_dict[key] = redact_secrets(value)
    return event_dict


def _timestamp(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """UTC ISO-8601 with microseconds, the same shape as the summaries' times."""
    event_dict["timestamp"] = datetime.now(UTC).isoformat()
    return event_dict


_encode = json.JSONEncoder(ensure_ascii=False, default=repr).encode


def _render(event_dict: EventDict, **_ignored: Any) -> str:
    """One JSON object; a value JSON cannot hold is shown by its ``repr``."""
    return _encode(event_dict)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stdout by default).

    Called once by the command line; ``execute`` passes stderr so stdout keeps the summary.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_render),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A structlog logger, optionally with bound context."""
    return structlog.get_logger(**context)
