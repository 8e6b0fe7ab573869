"""Plain Python code in a thread of its own that a cancellation stops at its next bytecode.

A thread cannot be killed. What CPython offers is ``PyThreadState_SetAsyncExc``: an
exception raised in the thread the next time it runs Python bytecode. A pure-Python loop
stops within microseconds; a thread blocked in C (``time.sleep``, a read, a long C
call) finishes that call first. So on cancellation :func:`call_stoppable` raises
:class:`Stopped` in the thread, again every few milliseconds (code may catch it), for up
to a grace, then gives up and lets the cancellation through, the thread left to end by
itself.

Each call gets a new daemon thread, not one of the loop's shared executor: a function
that does not stop holds no slot other work needs, and never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import threading
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

STOP_GRACE_S: Final = 1.0
"""How long a cancelled call's thread gets to stop before it is left running."""
_RETRY_S: Final = 0.01


class Stopped(BaseException):
    """Raised inside a call's thread when the call was cancelled (a timeout, an operator's
    cancel, shutdown). A ``BaseException``: ``except Exception`` in the code does not
    swallow it."""


class _Call:
    """One call running in its own thread; its outcome lands in ``future`` on the loop."""

    def __init__(self, work: Callable[[], object], name: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[tuple[bool, object]] = self.loop.create_future()
        self._lock = threading.Lock()
        self._finished = False
        run = contextvars.copy_context().run
        self._thread = threading.Thread(target=self._main, args=(run, work), name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self, run: Callable[..., object], work: Callable[[], object]) -> None:
        try:
            self._run(run, work)
        except Stopped:  # raised in our own code as the work ended: the call was cancelled
            self._settle()

    def _run(self, run: Callable[..., object], work: Callable[[], object]) -> None:
        outcome: tuple[bool, object]
        try:
            outcome = (True, run(work))
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (False, exc)
        self._settle()
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._deliver, outcome)

    def _settle(self) -> None:
        """Stop further interruptions and drop one still pending (it may fire right here,
        so this tries again until it gets through)."""
        while True:
            try:
                with self._lock:
                    self._finished = True
                    _set_async_exc(threading.get_ident(), None)
                return
            except Stopped:
                continue

    def _deliver(self, outcome: tuple[bool, object]) -> None:
        # The outcome goes as a result, never through set_exception: a future refuses
        # StopIteration, and a GeneratorExit thrown through await breaks the task.
        if not self.future.done():  # else cancelled: the outcome is nobody's
            self.future.set_result(outcome)

    def interrupt(self) -> None:
        """Raise :class:`Stopped` in the thread at its next bytecode (unless it ended)."""
        with self._lock:
            if not self._finished and self._thread.ident is not None:
                _set_async_exc(self._thread.ident, Stopped)

    async def stop(self, grace_s: float) -> bool:
        """Interrupt the thread until it ends, for up to ``grace_s``; whether it ended."""
        deadline = self.loop.time() + grace_s
        while self._thread.is_alive() and (left := deadline - self.loop.time()) > 0:
            self.interrupt()
            await asyncio.sleep(min(_RETRY_S, left))
        return not self._thread.is_alive()


def _set_async_exc(ident: int, exc_type: type[BaseException] | None) -> None:
    """Have thread ``ident`` raise ``exc_type`` at its next bytecode; ``None`` clears it."""
    # No argtypes: None must go as NULL (clear), not as Py_None.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), None if exc_type is None else ctypes.py_object(exc_type)
    )


async def call_stoppable(
    work: Callable[[], T],
    *,
    name: str = "wfe-python",
    grace_s: float = STOP_GRACE_S,
    left_running: Callable[[], None] | None = None,
) -> T:
    """``work()`` in a new thread named ``name``; its value, or its exception re-raised.

    When this is cancelled, :class:`Stopped` is raised in the thread until it ends, for
    up to ``grace_s`` seconds; then ``left_running()`` is called if it still runs, and
    the cancellation goes on either way. Context variables are copied into the thread.
    """
    call = _Call(work, name)
    call.start()
    try:
        ok, value = await call.future
    except asyncio.CancelledError:
        if not await call.stop(grace_s) and left_running is not None:
            left_running()
        raise
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]  # the thread's value, of work's type


__all__ = ["STOP_GRACE_S", "Stopped", "call_stoppable"]
