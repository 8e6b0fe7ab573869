"""Tests of ``GET /api/v1/events``: the real daemon as a subprocess read over HTTP, and the
hub and the store's watchers in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from daemon_helpers import Daemons, drop, free_port, get, wait_result
from wfe_daemon.core.records import NodeEvent, RunEvent, StoreEvent
from wfe_daemon.core.summary import build_summary
from wfe_daemon.store.database import Store
from wfe_daemon.web.events import EVENTS, KEEPALIVE, EventHub, routes

Event = dict[str, Any]
"""One parsed SSE event: ``id``, ``event`` and ``data`` (decoded JSON)."""

READ_TIMEOUT_S = 20.0  # longer than the keep-alive period: a quiet stream still sends


class Feed:
    """A client of ``/api/v1/events``: its events in order, and whether the stream ended."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        self.comments: list[str] = []
        self.ended = False

    def next(self) -> Event | None:
        """The next event; ``None`` once the server ended the stream."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif fields:
                return {"id": fields.get("id"), "event": fields["event"], **_data(fields)}
        self.ended = True
        return None

    def until(self, done: Callable[[Event], bool]) -> list[Event]:
        """Every event up to and including the first for which ``done`` is true."""
        seen = []
        while (event := self.next()) is not None:
            seen.append(event)
            if done(event):
                return seen
        raise AssertionError(f"the stream ended before the awaited event, after {seen}")


def _data(fields: dict[str, str]) -> dict[str, Any]:
    return {"data": json.loads(fields["data"])}


@contextmanager
def feed(port: int, query: str = "", last_event_id: str | None = None) -> Iterator[Feed]:
    """Open ``/api/v1/events?<query>`` (resuming after ``last_event_id``); close it after."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=READ_TIMEOUT_S))
        url = f"http://127.0.0.1:{port}/api/v1/events" + (f"?{query}" if query else "")
        response = stack.enter_context(client.stream("GET", url, headers=headers))
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Feed(response)


def run_ended(run_id: int | None = None) -> Callable[[Event], bool]:
    """Whether an event is the end of a run (of ``run_id``, when given)."""

    def done(event: Event) -> bool:
        data = event["data"]
        return (
            event["event"] == "run"
            and data["status"] != "RUNNING"
            and (run_id is None or data["run_id"] == run_id)
        )

    return done


def runs_ended(*run_ids: int) -> Callable[[Event], bool]:
    """Whether an event ends the last of runs ``run_ids`` to end."""
    left = set(run_ids)

    def done(event: Event) -> bool:
        if run_ended()(event):
            left.discard(event["data"]["run_id"])
        return not left

    return done


def chain(name: str, length: int) -> dict[str, Any]:
    """``n0 -> n1 -> ...``: ``length`` echo nodes, one after another."""
    nodes = [{"id": "n0", "type": "echo", "params": {"i": 0}}]
    nodes += [
        {"id": f"n{i}", "type": "echo", "depends_on": [f"n{i - 1}"], "params": {"i": i}}
        for i in range(1, length)
    ]
    return {"name": name, "nodes": nodes}


def seq(event: Event) -> int:
    """The ``seq`` part of an event's id."""
    return int(event["id"].rpartition("-")[2])


def test_a_run_shows_running_then_each_node_in_order_then_its_end(daemons: Daemons) -> None:
    """A dropped workflow shows as: the run RUNNING, each node RUNNING then SUCCESS in the
    chain's order, the run SUCCESS; ids share one boot and count up by one."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    with feed(port) as events:
        drop(daemons.inbox, "trio.json", chain("trio", 3))
        seen = events.until(run_ended())
    run_id = wait_result(daemons.outbox, "trio")["run_id"]
    start, *nodes, end = seen
    assert start["event"] == "run"
    assert start["data"] == {
        "run_id": run_id,
        "workflow": "trio",
        "status": "RUNNING",
        "started_at": start["data"]["started_at"],
        "finished_at": None,
    }
    assert [(e["event"], e["data"]["node_id"], e["data"]["status"]) for e in nodes] == [
        ("node", node, status) for node in ("n0", "n1", "n2") for status in ("RUNNING", "SUCCESS")
    ]
    assert all(e["data"]["run_id"] == run_id and e["data"]["attempts"] == 1 for e in nodes)
    assert all(e["data"]["error"] is None for e in nodes)
    assert [e["data"]["finished_at"] is None for e in nodes] == [True, False] * 3
    assert end["data"]["status"] == "SUCCESS"
    assert end["data"]["started_at"] == start["data"]["started_at"]
    assert end["data"]["finished_at"] is not None
    assert len({e["id"].rpartition("-")[0] for e in seen}) == 1
    assert [seq(e) for e in seen] == list(range(seq(start), seq(start) + len(seen)))


def test_a_failed_node_and_a_rejected_file_show_their_status_and_error(daemons: Daemons) -> None:
    """A node that fails shows FAILED with its error, the run its final status, and a file
    that is refused shows as a run event REJECTED."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    failing = {
        "name": "late",
        "nodes": [{"id": "s", "type": "sleep", "timeout": 0.1, "params": {"seconds": 5}}],
    }
    with feed(port) as events:
        drop(daemons.inbox, "late.json", failing)
        seen = events.until(run_ended())
        drop(daemons.inbox, "bad.json", b"{not json")
        refused = events.until(run_ended())
    node_end = seen[-2]["data"]
    assert (node_end["node_id"], node_end["status"]) == ("s", "FAILED")
    assert node_end["error"]
    assert seen[-1]["data"]["status"] == wait_result(daemons.outbox, "late")["status"]
    assert [(e["event"], e["data"]["status"]) for e in refused] == [("run", "REJECTED")]


def test_run_id_keeps_the_events_of_that_run_only(daemons: Daemons) -> None:
    """With ``?run_id=N`` a client gets exactly the events of run N that an unfiltered
    client gets, with the same ids, and nothing of other runs."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    drop(daemons.inbox, "first.json", chain("first", 1))
    first = wait_result(daemons.outbox, "first")["run_id"]
    wanted = first + 1
    with feed(port) as everything, feed(port, f"run_id={wanted}") as filtered:
        drop(daemons.inbox, "second.json", chain("second", 4))
        drop(daemons.inbox, "third.json", chain("third", 4))
        all_events = everything.until(runs_ended(wanted, wanted + 1))
        mine = filtered.until(run_ended(wanted))
    assert {e["data"]["run_id"] for e in all_events} == {wanted, wanted + 1}
    assert mine == [e for e in all_events if e["data"]["run_id"] == wanted]
    assert len(mine) == 1 + 4 * 2 + 1


def test_a_bad_run_id_is_a_json_error_naming_it(daemons: Daemons) -> None:
    """``run_id`` must be digits: anything else is 422 with an error naming ``run_id``."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    for value in ("x", "-1", "1.5", "", "\u0661", "1&run_id=2"):
        status, body = get(port, f"/api/v1/events?run_id={quote(value, safe='&=')}")
        assert status == 422, value
        error = json.loads(body)
        assert error["error"].startswith("run_id: "), value
        assert error["problems"] == []


def test_a_reconnect_with_last_event_id_misses_and_repeats_nothing(daemons: Daemons) -> None:
    """A client that disconnects, and reconnects with ``Last-Event-ID`` after more runs,
    gets every event after that id once, as a client that stayed connected got them."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    with feed(port) as steady:
        with feed(port) as leaving:
            drop(daemons.inbox, "before.json", chain("before", 2))
            last = leaving.until(run_ended())[-1]
        drop(daemons.inbox, "during.json", chain("during", 3))
        during = wait_result(daemons.outbox, "during")["run_id"]
        drop(daemons.inbox, "after.json", chain("after", 2))  # once reconnected, maybe before
        reference = steady.until(run_ended(during + 1))
        with feed(port, last_event_id=last["id"]) as back:
            resumed = back.until(run_ended(during + 1))
    assert resumed == reference[reference.index(last) + 1 :]
    assert {e["data"]["run_id"] for e in resumed} == {during, during + 1}
    assert [seq(e) for e in resumed] == list(range(seq(last) + 1, seq(last) + 1 + len(resumed)))


def test_a_last_event_id_of_another_boot_gets_reset_first(daemons: Daemons) -> None:
    """An id from the daemon's previous start is answered ``event: reset`` with ``{}``
    (reload your state), then the events go on."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port))
    with feed(port) as events:
        drop(daemons.inbox, "one.json", chain("one", 1))
        old_id = events.until(run_ended())[-1]["id"]
    assert daemon.terminate() == 0
    daemons.start(WFE_HTTP_PORT=str(port))
    with feed(port, last_event_id=old_id) as events:
        reset = events.next()
        drop(daemons.inbox, "two.json", chain("two", 1))
        after = events.until(run_ended())
    assert reset is not None
    assert (reset["event"], reset["data"]) == ("reset", {})
    assert reset["id"].rpartition("-")[0] != old_id.rpartition("-")[0]
    assert after[0]["data"]["workflow"] == "two"
    for bad in ("nonsense", f"{old_id.rpartition('-')[0]}-x", ""):
        with feed(port, last_event_id=bad) as events:
            first = events.next()
            assert first is not None and first["event"] == "reset", bad


def test_sigterm_ends_the_streams_and_the_daemon_exits_0(daemons: Daemons) -> None:
    """SIGTERM while clients are connected: their streams end cleanly and the daemon exits
    0 within its usual time (the server stops first, without waiting for them)."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port))
    with feed(port) as one, feed(port, "run_id=7") as two:
        drop(daemons.inbox, "w.json", chain("w", 1))
        one.until(run_ended())
        assert daemon.terminate() == 0
        assert one.next() is None and one.ended
        assert two.next() is None and two.ended
    assert daemon.events("daemon.stopped")


@pytest.mark.timeout(180)
def test_a_client_that_never_reads_does_not_hold_up_a_large_workflow(daemons: Daemons) -> None:
    """A client that sends its request and never reads does not stop a 2,000-node workflow
    from finishing, nor the server from answering others, nor the daemon from stopping."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port))
    with socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with feed(port) as steady:
            drop(daemons.inbox, "big.json", chain("big", 2000))
            seen = steady.until(run_ended())
        result = wait_result(daemons.outbox, "big", timeout=150)
        assert result["status"] == "SUCCESS"
        assert len(seen) == 1 + 2000 * 2 + 1
        assert get(port, "/healthz")[0] == 200
        assert daemon.terminate() == 0


def fanout(name: str, count: int) -> dict[str, Any]:
    """``count`` independent echo nodes with ids of 64 characters (long events)."""
    return {
        "name": name,
        "nodes": [{"id": f"{i:064d}", "type": "echo", "params": {}} for i in range(count)],
    }


def read_until_reset(sock: socket.socket) -> bytes:
    """What ``sock`` receives until ``event: reset`` arrives or the server ends the stream."""
    sock.settimeout(READ_TIMEOUT_S)
    received = b""
    try:
        while b"event: reset" not in received and (data := sock.recv(65536)):
            received += data
    except ConnectionResetError:
        pass  # disconnected: as valid an end as a reset
    return received


@pytest.mark.timeout(300)
def test_a_client_left_behind_by_the_buffer_is_reset_or_disconnected(daemons: Daemons) -> None:
    """A client that reads nothing while far more events than the buffer holds go by
    (40,000, some 12 MB) gets, once it reads, part of them then ``reset`` (or its stream
    ends): never all of them, and every run still finishes."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port))
    runs = 10
    with socket.socket() as stuck, feed(port) as steady:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for n in range(runs):
            drop(daemons.inbox, f"wide{n}.json", fanout(f"wide{n}", 2000))
        steady.until(runs_ended(*range(1, runs + 1)))  # a fresh database: ids 1..runs
        received = read_until_reset(stuck)
        lines = received.splitlines()
        ids = [int(line.rpartition(b"-")[2]) for line in lines if line.startswith(b"id: ")]
        assert len(ids) < runs * (2 * 2000 + 2), "the client got every event: it was never behind"
        if b"event: reset" in received:
            assert ids[:-1] == list(range(1, len(ids)))  # in order up to the reset
            assert ids[-1] > ids[-2] + 1
        assert daemon.terminate() == 0
    for n in range(runs):
        assert wait_result(daemons.outbox, f"wide{n}")["status"] == "SUCCESS"


# -- in-process: the hub and the store's watchers ---------------------------------------------


def run_event(run_id: int, status: str = "RUNNING") -> StoreEvent:
    """A run event of run ``run_id``."""
    data: RunEvent = {
        "run_id": run_id,
        "workflow": f"w{run_id}",
        "status": status,
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": None,
    }
    return StoreEvent("run", data)


async def take(hub: EventHub, *args: Any, n: int = 1) -> list[bytes]:
    """The first ``n`` chunks a new reader of ``hub`` would write."""
    chunks = []
    async for chunk in hub.reader(*args).chunks():
        chunks.append(chunk)
        if len(chunks) == n:
            break
    return chunks


def parse(chunks: list[bytes]) -> list[tuple[str, str, Any]]:
    """``(id, event, data)`` of each frame in ``chunks``; comments left out."""
    frames = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            frames.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return frames


async def test_the_ring_keeps_the_newest_events_and_resets_a_reader_beyond_it() -> None:
    """A ring of 4 after 10 events resumes after seq 6 (7..10 held) and answers an id
    before that, one of another boot and a malformed one with ``reset``."""
    hub = EventHub(4, boot="b")
    for run_id in range(1, 11):
        hub.publish(run_event(run_id))
    resumed = parse(await take(hub, None, "b-6"))
    assert [(i, e, d["run_id"]) for i, e, d in resumed] == [
        (f"b-{n}", "run", n) for n in range(7, 11)
    ]
    for lost in ("b-5", "a-8", "b-11", "b-", "8", "b-0x1"):
        assert parse(await take(hub, None, lost)) == [("b-10", "reset", {})], lost


async def test_a_reader_gets_only_its_run_and_what_comes_after_it_started() -> None:
    """A reader placed after events 1..2 gets the later ones, of its run only."""
    hub = EventHub(8, boot="b")
    hub.publish(run_event(1))
    hub.publish(run_event(2))
    reader = hub.reader(run_id=2)
    for run_id in (1, 2, 3, 2):
        hub.publish(run_event(run_id, "SUCCESS"))
    chunks = reader.chunks()
    frames = parse([await anext(chunks)])
    assert [(i, d["run_id"]) for i, _, d in frames] == [("b-4", 2), ("b-6", 2)]
    await chunks.aclose()


async def test_a_reader_left_behind_by_the_ring_is_reset_then_goes_on() -> None:
    """A reader that took nothing while the ring wrapped gets ``reset`` (with the newest
    id), then the events after it; the publisher never waited for it."""
    hub = EventHub(3, boot="b")
    chunks = hub.reader().chunks()
    for run_id in range(1, 6):
        hub.publish(run_event(run_id))
    assert parse([await anext(chunks)]) == [("b-5", "reset", {})]
    hub.publish(run_event(6))
    assert [i for i, _, _ in parse([await anext(chunks)])] == ["b-6"]
    await chunks.aclose()


async def test_closing_the_hub_ends_readers_and_idle_streams_get_keepalives() -> None:
    """An idle reader gets keep-alive comments; :meth:`EventHub.close` ends its stream."""
    hub = EventHub(2, boot="b")
    chunks = hub.reader().chunks(keepalive_s=0.01)
    assert await anext(chunks) == KEEPALIVE
    hub.close()
    assert [chunk async for chunk in chunks] == []


async def test_store_watchers_see_every_transition_in_order_until_unwatched(db_path: Path) -> None:
    """A watcher sees a run start, its node RUNNING and SUCCESS and the run's end, in that
    order; one that raises is logged and the store goes on; after unwatch, nothing."""
    seen: list[StoreEvent] = []

    def broken(event: StoreEvent) -> None:
        raise RuntimeError("broken watcher")

    async with Store.open(db_path) as store:
        unwatch = store.watch(seen.append)
        store.watch(broken)
        with capture_logs() as logs:
            run_id = await store.create_run(
                name="w", started_at="2026-01-01T00:00:00+00:00", nodes=[("a", "echo")]
            )
            store.node_running(run_id, "a", "2026-01-01T00:00:01+00:00", 1)
            store.node_finished(
                run_id,
                "a",
                status="SUCCESS",
                started_at="2026-01-01T00:00:01+00:00",
                finished_at="2026-01-01T00:00:02+00:00",
                duration=1.0,
                attempts=1,
            )
            summary = build_summary(
                run_id=run_id,
                workflow="w",
                source=None,
                status="SUCCESS",
                started_at="2026-01-01T00:00:00+00:00",
                finished_at="2026-01-01T00:00:03+00:00",
                duration=3.0,
                nodes=[],
            )
            await store.finish_run(
                run_id,
                status="SUCCESS",
                finished_at="2026-01-01T00:00:03+00:00",
                duration=3.0,
                summary=summary,
            )
        unwatch()
        await store.create_run(name="later", started_at="2026-01-01T00:00:04+00:00", nodes=[])
    assert [(e.kind, e.data.get("node_id"), e.data["status"]) for e in seen] == [
        ("run", None, "RUNNING"),
        ("node", "a", "RUNNING"),
        ("node", "a", "SUCCESS"),
        ("run", None, "SUCCESS"),
    ]
    assert seen[-1].data == {
        "run_id": run_id,
        "workflow": "w",
        "status": "SUCCESS",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:03+00:00",
    }
    assert [log["event"] for log in logs].count("store.watcher_failed") == 4


def node_failed(run_id: int, node_id: str, error: str) -> StoreEvent:
    """A node event of run ``run_id``: ``node_id`` FAILED with ``error``."""
    data: NodeEvent = {
        "run_id": run_id,
        "node_id": node_id,
        "status": "FAILED",
        "attempts": 1,
        "started_at": None,
        "finished_at": None,
        "error": error,
    }
    return StoreEvent("node", data)


async def test_a_client_whose_socket_takes_nothing_is_disconnected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream whose client reads nothing while megabytes of events go by is cut once a
    write waits ``WRITE_TIMEOUT_S``; the hub goes on, and nothing is logged as an error."""
    monkeypatch.setattr("wfe_daemon.web.events.WRITE_TIMEOUT_S", 0.2)
    hub = EventHub(100_000, boot="b")
    app = web.Application()
    app[EVENTS] = hub
    routes(app.router)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stuck = socket.socket()
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        await asyncio.get_running_loop().sock_connect(stuck, ("127.0.0.1", port))
        await asyncio.get_running_loop().sock_sendall(
            stuck, b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        with capture_logs() as logs:
            for n in range(5_000):  # some 50 MB, more than any socket buffer holds
                hub.publish(node_failed(1, f"n{n}", "x" * 10_000))
                if n % 50 == 0:
                    await asyncio.sleep(0.01)  # let the stream write, until it cannot
                if any(log["event"] == "http.events_stalled" for log in logs):
                    break
            else:
                raise AssertionError("the stream never stalled")
    finally:
        stuck.close()
        hub.close()
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
