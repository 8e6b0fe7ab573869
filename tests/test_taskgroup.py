"""The owner of background tasks (``wfe_daemon.taskgroup``)."""

from __future__ import annotations

import asyncio

import pytest

from wfe_daemon.taskgroup import background_tasks, one_error


async def _forever(stopped: list[str]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        stopped.append("stopped")


async def test_tasks_are_cancelled_and_waited_for_when_the_block_ends() -> None:
    """A task still running when the block ends has stopped once the block is left."""
    stopped: list[str] = []
    async with background_tasks() as tasks:
        task = tasks.create_task(_forever(stopped))
        await asyncio.sleep(0)
    assert task.cancelled()
    assert stopped == ["stopped"]


async def test_a_task_that_returned_keeps_its_result() -> None:
    """``create_task`` returns the task, whose result stays readable after the block."""

    async def answer() -> int:
        return 42

    async with background_tasks() as tasks:
        task = tasks.create_task(answer())
        await task
    assert task.result() == 42


async def test_the_block_s_exception_leaves_it_unwrapped() -> None:
    """An error of the block comes out as itself, not in an ExceptionGroup, tasks stopped."""
    stopped: list[str] = []
    with pytest.raises(KeyError, match="mine"):
        async with background_tasks() as tasks:
            tasks.create_task(_forever(stopped))
            await asyncio.sleep(0)
            raise KeyError("mine")
    assert stopped == ["stopped"]


async def test_cancelling_the_owner_stops_its_tasks_and_stays_a_cancel() -> None:
    """Cancelling the task that holds the block cancels it, after its tasks have stopped."""
    stopped: list[str] = []
    entered = asyncio.Event()

    async def owner() -> None:
        async with background_tasks() as tasks:
            tasks.create_task(_forever(stopped))
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(owner())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped == ["stopped"]


@pytest.mark.timeout(10)
async def test_a_failing_task_leaves_the_block_running_and_keeps_its_error() -> None:
    """A task that raises does not cancel the block: its owner reads the error, then the
    block ends normally and the other tasks are stopped."""
    started: list[asyncio.Task[None]] = []
    async with background_tasks() as tasks:
        failing = tasks.create_task(_raise(OSError(5, "Input/output error")))
        started.append(tasks.create_task(asyncio.sleep(60)))
        await asyncio.wait([failing])
        await asyncio.sleep(0)  # the block is still running here
        error = failing.exception()
    assert isinstance(error, OSError) and error.errno == 5
    assert started[0].cancelled()


async def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.timeout(10)
async def test_one_error_unwraps_the_error_of_an_anyio_task_group() -> None:
    """An error of the body of an anyio task group leaves ``one_error`` as itself."""
    import anyio

    with pytest.raises(LookupError, match="no such run"), one_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 60)
            raise LookupError("no such run")
