"""Per-attempt deadlines on one timer, as the engine uses them."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import pytest

from wfe_daemon.runtime.deadlines import Deadlines
from wfe_daemon.runtime.eventloop import run


async def _attempt(deadlines: Deadlines, limit: float, work: float) -> str:
    """What the engine does around one attempt: ``work`` seconds within ``limit`` seconds."""
    deadline = deadlines.start(limit)
    try:
        try:
            await asyncio.sleep(work)
        finally:
            timed_out = deadlines.end(deadline)
    except asyncio.CancelledError:
        if timed_out:
            return "timed out"
        raise
    return "done"


async def test_attempts_past_their_deadline_time_out_and_the_others_finish() -> None:
    deadlines = Deadlines()
    results = await asyncio.gather(
        _attempt(deadlines, 5, 0.05),
        _attempt(deadlines, 0.05, 5),
        _attempt(deadlines, 0.1, 5),
        _attempt(deadlines, 5, 0.2),
    )
    assert results == ["done", "timed out", "timed out", "done"]


async def test_a_cancel_from_elsewhere_is_not_taken_for_the_timeout() -> None:
    """Cancelled by its deadline and by someone else: the task stays cancelled."""
    deadlines = Deadlines()
    taken_for_timeout: list[bool] = []

    async def attempt() -> None:
        deadline = deadlines.start(0.01)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            asyncio.current_task().cancel()  # type: ignore[union-attr]  # a shutdown, say
            taken_for_timeout.append(deadlines.end(deadline))
            raise

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(attempt())
    assert taken_for_timeout == [False]


async def test_a_cancel_from_elsewhere_before_the_deadline_passes_through() -> None:
    deadlines = Deadlines()
    task = asyncio.create_task(_attempt(deadlines, 5, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_ended_attempts_keep_neither_their_task_nor_an_entry() -> None:
    """A long run of quick attempts under a long timeout holds no memory for them."""
    deadlines = Deadlines()
    tasks = [asyncio.create_task(_attempt(deadlines, 300, 0)) for _ in range(2000)]
    refs = [weakref.ref(task) for task in tasks]
    assert set(await asyncio.gather(*tasks)) == {"done"}
    await asyncio.sleep(0)  # the loop lets go of the last callbacks it ran
    del tasks
    gc.collect()
    assert not any(ref() is not None for ref in refs)
    assert [len(queue.entries) for queue in deadlines._queues.values()] == [0]


async def test_quick_attempts_behind_a_slow_one_do_not_pile_up() -> None:
    """One attempt runs long; thousands with the same timeout end meanwhile: the queue
    keeps about the running ones, not every ended one behind the slow head."""
    deadlines = Deadlines()
    slow = asyncio.create_task(_attempt(deadlines, 300, 5))
    await asyncio.sleep(0)
    for _ in range(20):
        assert set(await asyncio.gather(*(_attempt(deadlines, 300, 0) for _ in range(500)))) == {
            "done"
        }
    (queue,) = deadlines._queues.values()
    assert len(queue.entries) < 200
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


def test_a_deadline_on_a_new_event_loop_fires_though_the_last_loop_left_a_timer() -> None:
    """An engine outliving a loop (tests do) still times out on the next one."""
    deadlines = Deadlines()

    async def first() -> None:
        with deadlines.scope(0.5):  # arms a timer on this loop, never fired
            await asyncio.sleep(0)

    async def second() -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError), deadlines.scope(0.6):
            await asyncio.sleep(3)
        return time.monotonic() - started

    run(first())
    assert run(second()) < 2


async def test_a_scope_raises_timeout_error_and_nested_scopes_each_answer_for_their_own() -> None:
    """As with ``asyncio.timeout``: the scope whose deadline passed raises TimeoutError out
    of its block; an outer scope's cancel passes through an inner one untouched."""
    deadlines = Deadlines()

    async def nested(inner: float, outer: float) -> str:
        try:
            with deadlines.scope(outer) as outer_scope:
                try:
                    with deadlines.scope(inner) as inner_scope:
                        await asyncio.sleep(5)
                except TimeoutError:
                    assert inner_scope.expired and not outer_scope.expired
                    return "inner"
        except TimeoutError:
            assert outer_scope.expired and not inner_scope.expired
            return "outer"
        return "neither"

    assert await nested(0.05, 5) == "inner"
    assert await nested(5, 0.05) == "outer"

    with deadlines.scope(5) as scope:
        await asyncio.sleep(0)
    assert not scope.expired


async def test_a_deadline_never_passes_early() -> None:
    """uvloop keeps millisecond time and may fire a timer early; a timeout may not."""
    deadlines = Deadlines()
    for _ in range(80):
        started = time.perf_counter()
        with pytest.raises(TimeoutError), deadlines.scope(0.005):
            await asyncio.sleep(1)
        assert time.perf_counter() - started >= 0.005
