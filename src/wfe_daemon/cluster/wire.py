"""What crosses the wire between the daemon and a Dask worker: one JSON request per node
attempt, one JSON reply. Nothing else is sent (no pickled objects of ours, no settings).

The attempt's Dask key names the daemon that sent it (:func:`attempt_key`), so a daemon
restarted after a crash finds and cancels the attempts its earlier life left running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

KEY_PREFIX = "wfe"


def instance_prefix(instance: str) -> str:
    """The start of every attempt key of the daemon ``instance`` (all of its lives)."""
    return f"{KEY_PREFIX}-{instance}-"


def attempt_key(instance: str, boot: str, run_id: int, node_id: str, attempt: int) -> str:
    """The Dask key of one attempt: unique per daemon, life (``boot``), run, node, attempt."""
    return f"{instance_prefix(instance)}{boot}-{run_id}-{attempt}-{node_id}"


@dataclass(frozen=True, slots=True)
class AttemptRequest:
    """One node attempt, as the daemon sends it: params already resolved and checked."""

    key: str
    """The attempt's Dask key (:func:`attempt_key`), its name on the worker."""
    task_type: str
    params: Any
    run_id: int
    workflow: str
    node_id: str
    attempt: int
    timeout: float
    """Seconds; the worker ends the attempt after this long."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, data: str) -> AttemptRequest:
        return cls(**json.loads(data))


@dataclass(frozen=True, slots=True)
class AttemptReply:
    """How one attempt ended on the worker: ``output_json`` or ``error``, never both."""

    worker: str
    """The address of the worker that ran the attempt."""
    output_json: str | None = None
    """The output as compact JSON (the engine's ``encode_output``), on success."""
    error: str | None = None
    """The failure, worded as the engine words it locally (``failure_message``)."""
    timed_out: bool = False
    """The attempt ran past its timeout on the worker (``error`` says so)."""
    traceback: str | None = None
    """The exception's traceback, for the daemon's log at debug level (never stored)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> AttemptReply:
        return cls(**json.loads(data))


__all__ = ["AttemptReply", "AttemptRequest", "attempt_key", "instance_prefix"]
