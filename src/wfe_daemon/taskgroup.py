"""The owner of a resource's background tasks: they end with the resource.

A store's writer, a progress line's ticker, a program's pipe readers: each runs beside the
code that uses the resource and stops when that code is done with it. :func:`background_tasks`
owns them: when its body ends it cancels the tasks still running, waits for them, and
raises the body's exception as it was (never in an ``ExceptionGroup``).

Unlike a task group, a task that fails does not cancel the body: the code that uses the
resource reads the task's outcome where it needs it (the shell task reads its pipe reader's
error after stopping the program, which an aborted group would no longer let it do; the
store's probe keeps its error for ``wait_writable``). A failure nobody reads is reported by
asyncio's "exception was never retrieved" log line.

Plain asyncio tasks, not an anyio task group, because a resource may be entered into an
``AsyncExitStack`` inside one cancel scope and closed outside it (the daemon opens its
store that way), and an anyio task group must nest within the scopes around it.
"""

from __future__ import annotations

import asyncio
from asyncio import Task
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    """The tasks of one :func:`background_tasks` block."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: list[Task[Any]] = []

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
        """Run ``coro`` in a task until it returns or the block ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks = [*(t for t in self._tasks if not t.done()), task]
        return task

    async def _stop(self) -> None:
        """Cancel the tasks still running and wait for all of them."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        while tasks:
            try:
                await asyncio.wait(tasks)
                break
            except asyncio.CancelledError:  # the owner is cancelled: its tasks stop first
                for task in tasks:
                    task.cancel()
                await asyncio.shield(asyncio.wait(tasks))
                raise


@asynccontextmanager
async def background_tasks() -> AsyncIterator[BackgroundTasks]:
    """``async with background_tasks() as tasks:``: the tasks started in ``tasks`` are
    cancelled when the block ends (and waited for), and the block's exception leaves it
    unwrapped. A task's failure is its owner's to read (``task.exception()``); it does not
    end the block.
    """
    tasks = BackgroundTasks()
    try:
        yield tasks
    finally:
        await tasks._stop()


@contextmanager
def one_error() -> Iterator[None]:
    """Around an anyio task group whose tasks only serve its body: the body's error (or a
    task's) leaves as itself, not in the ``ExceptionGroup`` anyio wraps every error in."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
