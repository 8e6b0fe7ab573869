"""Every command and every async test runs on uvloop's event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import uvloop

from wfe_daemon.runtime.eventloop import run


def test_run_returns_the_result_of_a_coroutine_run_on_uvloop() -> None:
    async def loop_type() -> type:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert run(loop_type()) is uvloop.Loop


async def test_async_tests_run_on_the_loop_the_commands_use() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


@pytest.mark.timeout(90)
def test_the_exit_does_not_wait_for_a_call_stuck_in_the_default_thread_pool() -> None:
    """A call left blocked in the loop's default thread pool (as a name lookup is while
    the resolver does not answer) holds up neither the loop's close nor the interpreter's
    exit: the process ends with the coroutine's result."""
    read_end, write_end = os.pipe()
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from wfe_daemon.runtime.eventloop import run

        async def main() -> str:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, os.read, {read_end}, 1)  # blocks until the pipe closes
            await asyncio.sleep(0.1)
            return "done"

        print(run(main()), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        pass_fds=(read_end,),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(read_end)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the process still waited for the stuck call after 60 s")
    finally:
        os.close(write_end)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "done"
    assert "eventloop.threads_left" in out + err
