"""Every command and every async test runs on uvloop's event loop."""

from __future__ import annotations

import asyncio

import uvloop

from wfe_daemon.runtime.eventloop import run


def test_run_returns_the_result_of_a_coroutine_run_on_uvloop() -> None:
    async def loop_type() -> type:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert run(loop_type()) is uvloop.Loop


async def test_async_tests_run_on_the_loop_the_commands_use() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
