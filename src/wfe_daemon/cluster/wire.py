"""What crosses the wire between the daemon and a Dask worker: one JSON request per node
attempt, one JSON reply. Nothing else is sent (no pickled objects of ours, no settings).

The attempt's Dask key names the daemon that sent it (:func:`attempt_key`), so a daemon
restarted after a crash finds and cancels the attempts its earlier life left running.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
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
    def from_json(cls, data: str | bytes) -> AttemptRequest:
        """The request ``data`` holds.

        Raises:
            ValueError: naming what is wrong (not JSON, a field missing, unknown or of the
                wrong type, a timeout that is not a positive number of seconds).
        """
        fields_ = _object(data)
        _check_fields(fields_, {f.name for f in fields(cls)}, "request")
        for name, kind in _REQUEST_TYPES.items():
            value = fields_[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"request field {name!r} is not {_KIND_NAMES[kind]}")
        timeout = fields_["timeout"]
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"request field 'timeout' is {timeout}, not a positive number")
        return cls(**fields_)


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
    def from_json(cls, data: str | bytes) -> AttemptReply:
        """The reply ``data`` holds.

        Raises:
            ValueError: not JSON, or a field missing (``worker``) or unknown.
        """
        fields_ = _object(data)
        _check_fields(fields_, {f.name for f in fields(cls)}, "reply", required={"worker"})
        return cls(**fields_)


_REQUEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "key": str,
    "task_type": str,
    "run_id": int,
    "workflow": str,
    "node_id": str,
    "attempt": int,
    "timeout": (int, float),
}
"""The type of each request field but ``params`` (any JSON value)."""
_KIND_NAMES: dict[type | tuple[type, ...], str] = {
    str: "a string",
    int: "an integer",
    (int, float): "a number",
}


def _object(data: str | bytes) -> dict[str, Any]:
    """The JSON object ``data`` holds, or a ``ValueError`` saying it is none."""
    try:
        value = json.loads(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    return value


def _check_fields(
    value: dict[str, Any], names: set[str], what: str, required: set[str] | None = None
) -> None:
    """Refuse ``value`` unless its keys are among ``names`` and hold all of ``required``
    (all of ``names`` when not given)."""
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}")
    missing = sorted((names if required is None else required) - set(value))
    if missing:
        raise ValueError(f"{what} fields missing: {missing}")


__all__ = ["AttemptReply", "AttemptRequest", "attempt_key", "instance_prefix"]
