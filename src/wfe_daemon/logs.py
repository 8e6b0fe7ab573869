"""Logging: one JSON object per line, UTC timestamps, bound context, secrets redacted.

Event names are the contract's; they live here so every module logs the same words.
"""

from __future__ import annotations

import logging
import sys
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


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stdout by default).

    Called once by the command line; ``execute`` passes stderr so stdout keeps the summary.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A structlog logger, optionally with bound context."""
    return structlog.get_logger(**context)
