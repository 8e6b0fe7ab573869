"""Blocking work of a task in a worker thread, owned by the awaiting coroutine."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from wfe_daemon.errors import TaskFailed

T = TypeVar("T")


async def in_thread(
    work: Callable[..., T], *args: Any, cancelled: threading.Event | None = None
) -> T:
    """``work(*args)`` in a worker thread; on cancellation, set ``cancelled``, wait for the
    thread to end, then re-raise.

    A thread cannot be killed. Waiting for it keeps it owned: a retry or the next node
    never overlaps a cancelled attempt's thread that is still writing.
    """
    # The executor's future itself, as asyncio.to_thread makes it, without a task around
    # it: nothing runs on the loop for the thread but this coroutine, which owns it.
    call = functools.partial(contextvars.copy_context().run, work, *args)
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if cancelled is not None:
            cancelled.set()
        await asyncio.wait({future})  # not shielded: a second cancel stops the wait
        if not future.cancelled():
            future.exception()  # retrieved: the attempt's outcome is the cancellation
        raise


async def run_blocking(work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args, cancelled)`` in a worker thread; ``cancelled`` is set if we are.

    ``work`` checks ``cancelled`` between batches (:func:`stop_if`) and stops soon;
    this returns (raising the cancellation) once it has.
    """
    cancelled = threading.Event()
    return await in_thread(work, *args, cancelled, cancelled=cancelled)


def stop_if(cancelled: threading.Event) -> None:
    """Raise in the worker thread once the node has been cancelled."""
    if cancelled.is_set():
        raise TaskFailed("cancelled")
