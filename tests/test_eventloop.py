"""Every command and every async test runs on uvloop's event loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

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


LOOKUP_SCRIPT = """
import asyncio, socket, threading, time
from wfe_daemon.runtime.eventloop import run

def blackhole() -> None:  # a name server that never answers
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    while True:
        sock.recv(512)

async def main() -> int:
    threading.Thread(target=blackhole, daemon=True).start()
    time.sleep(0.2)
    loop = asyncio.get_running_loop()
    loop.create_task(loop.getaddrinfo("scheduler.example", 8786))  # libuv's thread pool
    await asyncio.sleep(0.5)
    return 0

print("result", run(main()), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_the_exit_does_not_wait_for_a_name_lookup_the_resolver_never_answers(
    tmp_path: Path,
) -> None:
    """A name lookup pending in libuv's thread pool, whose resolver never answers (a
    container's network gone), holds up the loop's close :data:`CLOSE_WAIT_S` at most:
    the process then exits with the coroutine's status and says so at warning. Runs in
    a private network and mount namespace whose ``/etc/resolv.conf`` names a silent
    server on 127.0.0.1."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:5\n")
    script = (
        'ip link set lo up || exit 97; mount --bind "$1" /etc/resolv.conf || exit 97;'
        ' exec "$2" -c "$3"'
    )
    probe = subprocess.run(["unshare", "-nm", "true"], capture_output=True, check=False)
    if probe.returncode != 0 or shutil.which("ip") is None:
        pytest.skip("needs root (or user namespaces) for unshare -nm, and ip")
    proc = subprocess.Popen(
        ["unshare", "-nm", "sh", "-c", script, "sh", str(resolv), sys.executable, LOOKUP_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process still waited for the name lookup after 90 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode == 97:
        pytest.skip(f"cannot set up the namespace: {err.strip()}")
    assert proc.returncode == 0, err
    assert "eventloop.close_stuck" in out + err
