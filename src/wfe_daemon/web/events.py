"""``GET /api/v1/events[?run_id=N]``: run and node transitions as Server-Sent Events.

An :class:`EventHub` watches the daemon's store while the server serves (``HttpFront``
creates it) and keeps the newest events in a ring of fixed size, each numbered ``seq``
(1, 2, ...) and named ``<boot>-<seq>``, ``boot`` being random per hub. Publishing is an
append to the ring: it never waits for a client, allocates nothing per client and
encodes nothing.

Each client is a :class:`Reader` with a cursor (the last ``seq`` it was sent) that reads
the ring at its own pace, so memory never grows with a slow client, and writes at most
every ``COALESCE_S``, so a busy run's events cost a few writes a second, not one each.
One that falls further behind than the ring holds is sent ``event: reset`` ("reload your
state") and goes on from the newest event; one whose socket takes nothing for ``WRITE_TIMEOUT_S``
is disconnected. ``Last-Event-ID`` resumes after that event while the ring still holds
what came after it; an id of another boot, or one too old, gets ``reset`` first. An idle
stream gets a ``: keep-alive`` comment every ``KEEPALIVE_S``. Closing the hub (when the
server stops) ends every stream cleanly.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import orjson
import structlog
from aiohttp import web

from wfe_daemon.core.records import StoreEvent
from wfe_daemon.web.server import ApiError

__all__ = ["BUFFER_SIZE", "EVENTS", "KEEPALIVE_S", "EventHub", "Reader", "routes"]

log = structlog.get_logger()

BUFFER_SIZE = 10_000
"""Events kept for readers behind and for ``Last-Event-ID`` resumes."""
KEEPALIVE_S = 15.0
"""An idle stream gets a comment this often, so proxies and clients see it alive."""
WRITE_TIMEOUT_S = 30.0
"""A client whose socket takes nothing for this long is disconnected."""
BATCH = 500
"""Events sent in one write at most (a reader far behind catches up in steps)."""
COALESCE_S = 0.05
"""After a write that caught up, a reader waits this long before the next, so a busy
engine's events go out many to a write instead of one wake-up and one write per event on
the engine's loop; a reader behind writes on without waiting."""

KEEPALIVE = b": keep-alive\n\n"
_OPENED = b": connected\n\n"


class EventHub:
    """The newest ``size`` store events, read by any number of SSE clients.

    :meth:`publish` is the store watcher (``Store.watch``); :meth:`reader` makes a
    client's cursor; :meth:`close` ends every reader.
    """

    def __init__(self, size: int = BUFFER_SIZE, *, boot: str | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.boot = secrets.token_hex(6) if boot is None else boot
        self._size = size
        self._events: list[StoreEvent | None] = [None] * size
        self._frames: list[bytes | None] = [None] * size
        """Each event's SSE frame, encoded once by the first reader that sends it."""
        self.last = 0
        """The ``seq`` of the newest event (0: none yet)."""
        self._changed: asyncio.Event | None = None
        self.closed = False

    def publish(self, event: StoreEvent) -> None:
        """Append ``event`` (the oldest drops out once the ring is full); wake the readers."""
        self.last += 1
        at = self.last % self._size
        self._events[at] = event
        self._frames[at] = None
        self._wake()

    def close(self) -> None:
        """End every reader's stream (after what it has been sent)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def wait(self, after: int, timeout_s: float) -> None:
        """Return once an event newer than ``after`` is published, the hub is closed, or
        ``timeout_s`` has passed."""
        if self.last > after or self.closed:
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            async with asyncio.timeout(timeout_s):
                await changed.wait()
        except TimeoutError:
            pass

    def held(self, seq: int) -> bool:
        """Whether every event after ``seq`` is still in the ring (``seq`` itself may not be)."""
        return self.last - self._size <= seq <= self.last

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The ``seq`` to read after for a client that last saw ``last_event_id``: the newest
        without one, ``None`` (reset) when it is of another boot, too old or malformed."""
        if last_event_id is None:
            return self.last
        boot, _, seq = last_event_id.strip().rpartition("-")
        if boot != self.boot or not seq.isdecimal() or not seq.isascii():
            return None
        return int(seq) if self.held(int(seq)) else None

    def frames(self, after: int, upto: int, run_id: int | None) -> bytes:
        """The SSE frames of the events ``after < seq <= upto`` (of run ``run_id`` only,
        when given); every one of them must be :meth:`held`."""
        out = []
        for seq in range(after + 1, upto + 1):
            at = seq % self._size
            event = self._events[at]
            assert event is not None
            if run_id is not None and event.data["run_id"] != run_id:
                continue
            frame = self._frames[at]
            if frame is None:
                frame = self._frames[at] = _frame(f"{self.boot}-{seq}", event)
            out.append(frame)
        return b"".join(out)

    def reader(self, run_id: int | None = None, last_event_id: str | None = None) -> Reader:
        """A client's cursor, placed now: it gets every event published from now on (and
        those after ``last_event_id`` while held), ``reset`` first when those are lost."""
        return Reader(self, run_id, self.resume_point(last_event_id))


class Reader:
    """One client's place in an :class:`EventHub`; iterate :meth:`chunks` to stream it."""

    def __init__(self, hub: EventHub, run_id: int | None, after: int | None) -> None:
        self._hub = hub
        self._run_id = run_id
        self._reset = after is None
        self.after = hub.last if after is None else after
        """The ``seq`` of the last event this reader has taken (sent or filtered out)."""

    async def chunks(self, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[bytes]:
        """What to write to the client, in order, until the hub closes: frames of events,
        ``reset`` when events were lost, and keep-alive comments while idle."""
        hub, clock = self._hub, asyncio.get_running_loop().time
        if self._reset:
            yield self._reset_frame()
        sent_at = clock()
        while not hub.closed:
            chunk = b""
            if hub.last == self.after:
                await hub.wait(self.after, sent_at + keepalive_s - clock())
            elif not hub.held(self.after):  # lost while this client was slow to take them
                self.after = hub.last
                chunk = self._reset_frame()
            else:
                upto = min(hub.last, self.after + BATCH)
                chunk = hub.frames(self.after, upto, self._run_id)
                self.after = upto
            if not chunk and not hub.closed and clock() - sent_at >= keepalive_s:
                chunk = KEEPALIVE  # quiet, or only other runs' events went by
            if chunk:
                yield chunk
                sent_at = clock()
                if self.after == hub.last:  # caught up: let the next events gather
                    await asyncio.sleep(COALESCE_S)

    def _reset_frame(self) -> bytes:
        return f"id: {self._hub.boot}-{self.after}\nevent: reset\ndata: {{}}\n\n".encode()


def _frame(event_id: str, event: StoreEvent) -> bytes:
    data = orjson.dumps(event.data)
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event.kind.encode(), data)


EVENTS: web.AppKey[EventHub] = web.AppKey("events", EventHub)
"""The hub of the app's events; the server sets it while it serves."""


def _run_id(request: web.Request) -> int | None:
    """The ``run_id`` query parameter (digits only), if given."""
    given = request.query.getall("run_id", [])
    if not given:
        return None
    if len(given) > 1:
        raise ApiError(422, "run_id: give it once")
    text = given[0]
    if not (text.isdecimal() and text.isascii()) or len(text) > 18:
        raise ApiError(422, f"run_id: must be a run id (digits), got {text!r}")
    return int(text)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/events``: the hub's events as ``text/event-stream``, until the hub
    closes or the client goes away (or takes nothing for ``WRITE_TIMEOUT_S``)."""
    run_id = _run_id(request)
    hub = request.app[EVENTS]
    # Placed before the headers go out: a client that has them gets every later event.
    reader = hub.reader(run_id, request.headers.get("Last-Event-ID"))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await _write(response, _OPENED)
        async for chunk in reader.chunks():
            await _write(response, chunk)
    except TimeoutError:
        log.info("http.events_stalled", run_id=run_id, after=reader.after)
        if request.transport is not None:
            request.transport.abort()  # its unsent frames would otherwise stay buffered
    except ConnectionError:
        pass  # the client went away
    return response


async def _write(response: web.StreamResponse, chunk: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await response.write(chunk)


def routes(router: web.UrlDispatcher) -> None:
    """Add ``GET /api/v1/events``."""
    router.add_get("/api/v1/events", stream_events, allow_head=False)
