"""The event loop every command runs on: uvloop's (libuv).

uvloop runs the same asyncio code with less CPU per callback, timer and socket operation
than the standard library's loop: 5-15 % less time per node through the engine, measured
against the standard loop in the same process (``benchmarks/RESULTS.md``, rows 1 and 2).

The loop's default thread pool (``run_in_executor(None, ...)``, ``asyncio.to_thread``) is
:class:`DefaultThreads`: a call still blocked in it at exit (a read from a network mount
that stopped answering, say) holds up the exit by :data:`SHUTDOWN_WAIT_S` at most, where
the standard pool would wait for it without end, in the loop's close and again in the
interpreter's.

Name lookups (``loop.getaddrinfo``, ``loop.getnameinfo``: what tornado, so Dask's client,
anyio, so httpx, and aiohttp call) run in Python threads, as on the standard loop, rather
than in libuv's: uvloop's ``close`` waits for every request pending in libuv, and a lookup
whose resolver stopped answering (a container's network gone) stays pending for minutes.
They have a pool of their own, whose lookups the exit does not wait for, so lookups stuck
while the resolver is down never hold up the default pool's calls (the tasks' blocking
work). Numeric addresses, which need no lookup, are answered at once on the loop
(``socket.getaddrinfo`` with ``AI_NUMERICHOST``, which never asks a name server).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import ipaddress
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future
from typing import Any, Final, ParamSpec, TypeVar

import structlog

T = TypeVar("T")
P = ParamSpec("P")

SHUTDOWN_WAIT_S: Final = 5.0
"""How long the exit waits for calls still running in the default thread pool."""
CLOSE_WAIT_S: Final = 10.0
"""How long the daemon's exit may take once its main coroutine has ended: closing the event
loop (the default thread pool's shutdown included) and the interpreter's joins of threads."""
_TELL_S: Final = 2.0  # for the last log line, before the process ends without it
THREADS_LEFT: Final = "eventloop.threads_left"
CLOSE_STUCK: Final = "eventloop.close_stuck"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new uvloop event loop, its default thread pool a
    :class:`DefaultThreads`; its result."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)


def run_to_exit(main: Coroutine[Any, Any, int], status_of: Callable[[BaseException], int]) -> int:
    """:func:`run` for the process's main coroutine, whose result is its exit status (the
    daemon's): if the exit then takes over :data:`CLOSE_WAIT_S`, the process ends with that
    status all the same (``status_of`` the exception ``main`` raised, if it did).

    The bound covers closing the loop (uvloop waits without end for what is pending in
    libuv, such as a name lookup a plugin started through its own ``create_connection``)
    and the threads the interpreter's exit joins (anyio's worker threads, the standard
    thread pools of libraries): call it once per process, as its last act.
    """
    runner = asyncio.Runner(loop_factory=new_loop)
    try:
        status = runner.run(main)
    except BaseException as exc:
        _close_within(runner, status_of(exc))
        raise
    _close_within(runner, status)
    return status


def _close_within(runner: asyncio.Runner, status: int) -> None:
    """Close ``runner``; exit the process with ``status`` if that and the interpreter's
    joins of threads at exit have not ended within :data:`CLOSE_WAIT_S`."""
    exited = threading.Event()
    atexit.register(exited.set)  # atexit runs once the interpreter has joined its threads

    def watch() -> None:
        if exited.wait(CLOSE_WAIT_S):
            return
        # Told from a thread of its own: a stdout that takes nothing (a reader that
        # stopped reading) must not hold up the exit either.
        tell = threading.Thread(target=_tell_stuck, args=(status,), daemon=True)
        tell.start()
        tell.join(_TELL_S)
        os._exit(status)

    threading.Thread(target=watch, name="wfe-exit-watch", daemon=True).start()
    runner.close()


def _tell_stuck(status: int) -> None:
    structlog.get_logger().warning(
        CLOSE_STUCK,
        waited=CLOSE_WAIT_S,
        status=status,
        error="the exit did not end (the event loop's close, or a thread it waits for):"
        " the process ends without it",
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def new_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop event loop, its name lookups and default thread pool as this module
    says (the loop :func:`run` uses)."""
    loop = _loop_class()()
    loop.set_default_executor(DefaultThreads())
    return loop


@functools.cache
def _loop_class() -> type[asyncio.AbstractEventLoop]:
    """uvloop's loop, its name lookups in a thread pool of their own (see the module's text)."""
    import uvloop

    class Loop(uvloop.Loop):
        def __init__(self) -> None:
            super().__init__()
            self.lookups = DefaultThreads(name="wfe-lookup")

        def close(self) -> None:
            try:
                super().close()
            finally:
                if self.is_closed():  # not when it refused, running
                    # The callers of a lookup still running are gone: it is left behind.
                    self.lookups.shutdown(wait=False, cancel_futures=True)

        async def getaddrinfo(
            self,
            host: bytes | str | None,
            port: bytes | str | int | None,
            *,
            family: int = 0,
            type: int = 0,
            proto: int = 0,
            flags: int = 0,
        ) -> list[Any]:
            if _numeric(host):
                # Answered here: uvloop would send a lookup without a socket type (what its
                # own sock_connect asks, for every connection) to libuv's threads.
                flags |= socket.AI_NUMERICHOST
                return socket.getaddrinfo(host, port, family, type, proto, flags)
            lookup = functools.partial(socket.getaddrinfo, host, port, family, type, proto, flags)
            return await self.run_in_executor(self.lookups, lookup)

        async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int = 0) -> tuple[str, str]:
            lookup = functools.partial(socket.getnameinfo, sockaddr, flags)
            return await self.run_in_executor(self.lookups, lookup)

    return Loop


def _numeric(host: bytes | str | None) -> bool:
    """Whether looking ``host`` up needs no name server (``None`` or an IP address)."""
    if host is None:
        return True
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    try:
        ipaddress.ip_address(text)  # an IPv6 address may name its zone ("fe80::1%eth0")
    except ValueError:
        return False
    return True


_Work = tuple[Future[Any], Callable[[], Any]]


class DefaultThreads(Executor):
    """A thread pool whose shutdown waits :data:`SHUTDOWN_WAIT_S` at most: its threads
    are daemon threads, so one still blocked then is left behind (and logged), and neither
    the loop's close nor the interpreter's exit joins it."""

    def __init__(self, max_workers: int | None = None, *, name: str = "wfe-default") -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max = max_workers or min(32, (os.cpu_count() or 1) + 4)  # as the stdlib's
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in one of the pool's threads; its future."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((future, lambda: fn(*args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                name = f"{self._name}-{len(self._threads)}"
                thread = threading.Thread(target=self._work, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            future, call = work
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # the caller's to see, as the stdlib's pool does
                    future.set_exception(exc)
            del work, future, call
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with ``wait``, wait for the running ones
        :data:`SHUTDOWN_WAIT_S` at most and log those still running then."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    work = self._queue.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if not wait:
            return
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [thread.name for thread in threads if thread.is_alive()]
        if left:
            structlog.get_logger().warning(
                THREADS_LEFT,
                threads=left,
                waited=SHUTDOWN_WAIT_S,
                error="calls still running in the default thread pool are left behind",
            )
