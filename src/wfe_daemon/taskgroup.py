"""The owner of a resource's background tasks: a task group that ends with the resource.

A store's writer, a progress line's ticker, a program's pipe readers: each runs beside the
code that uses the resource and stops when that code is done with it. A task group owns
them, but it wraps the exception of its own body in an ``ExceptionGroup``, so an error of
the code using the resource would come out changed. :func:`background_tasks` cancels the
tasks when its body ends, waits for them, and raises the body's exception as it was.

It is an :class:`asyncio.TaskGroup`, not an anyio one, because a resource may be entered
into an ``AsyncExitStack`` inside one cancel scope and closed outside it (the daemon opens
its store that way), and an anyio task group must nest within the scopes around it.
"""

from __future__ import annotations

import asyncio
from asyncio import Task
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    """The tasks of one :func:`background_tasks` block."""

    __slots__ = ("_group", "_tasks")

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._tasks: list[Task[Any]] = []

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
        """Run ``coro`` in a task of the group until it returns or the block ends."""
        task = self._group.create_task(coro, name=name)
        self._tasks = [*(t for t in self._tasks if not t.done()), task]
        return task

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


@asynccontextmanager
async def background_tasks() -> AsyncIterator[BackgroundTasks]:
    """``async with background_tasks() as tasks:``: the tasks started in ``tasks`` are
    cancelled when the block ends (and waited for), and the block's exception leaves it
    unwrapped.

    A task that fails raises as in any task group (in an ``ExceptionGroup``).
    """
    raised: BaseException | None = None
    async with asyncio.TaskGroup() as group:
        tasks = BackgroundTasks(group)
        try:
            yield tasks
        except BaseException as exc:  # raised as itself once the tasks have stopped
            raised = exc
        tasks._cancel()
    if raised is not None:
        raise raised
