"""The JSON that crosses the wire between the daemon and a Dask worker
(``wfe_daemon.cluster.wire``): what a request and a reply accept, and what they refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wfe_daemon.cluster.wire import AttemptReply, AttemptRequest, attempt_key

GOOD = AttemptRequest(
    key=attempt_key("i", "b", 7, "n", 2),
    task_type="echo",
    params={"big": "x" * 1_000_000, "nested": [{"a": None}]},
    run_id=7,
    workflow="wf",
    node_id="n",
    attempt=2,
    timeout=1.5,
)


def test_request_round_trip() -> None:
    """A request comes back from its JSON unchanged, however large its params."""
    assert AttemptRequest.from_json(GOOD.to_json()) == GOOD
    assert AttemptRequest.from_json(GOOD.to_json().encode()) == GOOD


def _with(**changes: Any) -> str:
    fields = json.loads(GOOD.to_json())
    fields.update(changes)
    return json.dumps(fields)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "not JSON"),
        ("null", "not a JSON object but NoneType"),
        (_with(surprise=1), "unknown request fields ['surprise']"),
        ('{"key": "k"}', "request fields missing: ['attempt', 'node_id', 'params'"),
        (_with(run_id="7"), "request field 'run_id' is not an integer"),
        (_with(run_id=7.0), "request field 'run_id' is not an integer"),
        (_with(node_id=None), "request field 'node_id' is not a string"),
        (_with(timeout=True), "request field 'timeout' is not a number"),
        (_with(timeout=0), "request field 'timeout' is 0, not a positive number"),
    ],
)
def test_request_refused(data: str, message: str) -> None:
    """A request that is not one raises ``ValueError`` naming the problem."""
    with pytest.raises(ValueError) as caught:
        AttemptRequest.from_json(data)
    assert message in str(caught.value)


def test_request_refuses_an_infinite_timeout() -> None:
    """A timeout of NaN or infinity (which Python's JSON reads) is refused."""
    for value in ("NaN", "Infinity"):
        data = _with(timeout=0).replace('"timeout": 0', f'"timeout": {value}')
        with pytest.raises(ValueError, match="not a positive number"):
            AttemptRequest.from_json(data)


def test_reply_round_trip_and_refusals() -> None:
    """A reply comes back unchanged; one without ``worker`` or with unknown fields is refused."""
    reply = AttemptReply(worker="tcp://127.0.0.1:1", error="boom", traceback="tb")
    assert AttemptReply.from_json(reply.to_json()) == reply
    with pytest.raises(ValueError, match=r"reply fields missing: \['worker'\]"):
        AttemptReply.from_json('{"error": "x"}')
    with pytest.raises(ValueError, match="unknown reply fields"):
        AttemptReply.from_json('{"worker": "w", "extra": 1}')
