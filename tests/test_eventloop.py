"""Every command and every async test runs on uvloop's event loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, ThreadPoolExecutor
from pathlib import Path

import pytest
import uvloop

from wfe_daemon.runtime.eventloop import DefaultThreads, new_loop, run


def test_run_returns_the_result_of_a_coroutine_run_on_uvloop() -> None:
    """The commands' loop is uvloop's, with the default thread pool of this module."""

    async def loop() -> tuple[asyncio.AbstractEventLoop, str]:
        running = asyncio.get_running_loop()
        return running, await asyncio.to_thread(lambda: threading.current_thread().name)

    ran, thread = run(loop())
    assert isinstance(ran, uvloop.Loop)
    assert thread.startswith("wfe-default-")  # a thread of DefaultThreads


async def test_async_tests_run_on_the_loop_the_commands_use() -> None:
    """Async tests run on the loop :func:`run` makes (``tests/conftest.py``)."""
    made = new_loop()
    try:
        assert type(asyncio.get_running_loop()) is type(made)
    finally:
        made.close()


def _interrupted() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("pool_class", [DefaultThreads, ThreadPoolExecutor])
def test_the_default_pool_keeps_the_standard_pools_contract(
    pool_class: Callable[..., Executor],
) -> None:
    """:class:`DefaultThreads` runs calls and hands on what they raise (a BaseException
    too, and the thread goes on), cancels queued calls with ``cancel_futures``, finishes
    the running ones and refuses new ones after shutdown, as ``ThreadPoolExecutor`` does."""
    with pytest.raises(ValueError, match="max_workers"):
        pool_class(max_workers=0)
    pool = pool_class(max_workers=1)
    assert pool.submit(divmod, 7, 2).result(timeout=30) == (3, 1)
    assert isinstance(pool.submit(int, "x").exception(timeout=30), ValueError)
    assert isinstance(pool.submit(_interrupted).exception(timeout=30), KeyboardInterrupt)
    started, gate = threading.Event(), threading.Event()
    running = pool.submit(lambda: started.set() or gate.wait(30))
    assert started.wait(30)
    queued = pool.submit(str, "never")
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(str, "late")
    gate.set()
    assert running.result(timeout=30) is True
    with pytest.raises(CancelledError):
        queued.result(timeout=30)
    pool.shutdown(wait=True)


LOOKUPS = [
    (("localhost", 80), {}),
    ((b"localhost", b"80"), {"type": socket.SOCK_STREAM}),
    (("localhost", "http"), {"family": socket.AF_INET}),
    (("localhost", None), {"family": socket.AF_INET, "type": socket.SOCK_DGRAM}),
    ((None, 8080), {"flags": socket.AI_PASSIVE}),
    ((None, "http"), {}),
    (("127.0.0.1", 80), {"proto": socket.IPPROTO_TCP}),
    ((b"::1", 80), {"family": socket.AF_INET6}),
    (("fe80::1%lo", 80), {}),
    (("127.0.0.1%lo", 80), {"flags": socket.AI_NUMERICHOST}),  # an IPv4 address has no zone
    (("localhost", 80), {"flags": socket.AI_CANONNAME}),
    (("localhost", "no-such-service"), {}),
]


async def test_name_lookups_give_what_the_system_resolver_gives() -> None:
    """A host name (looked up in a thread) and a numeric address (answered at once) both
    resolve as ``socket.getaddrinfo`` does, for every argument shape, errors included;
    ``getnameinfo`` too."""
    loop = asyncio.get_running_loop()
    for args, kwargs in LOOKUPS:
        try:
            got: object = sorted(await loop.getaddrinfo(*args, **kwargs), key=repr)
        except OSError as exc:
            got = (type(exc), exc.errno)
        try:
            expected: object = sorted(socket.getaddrinfo(*args, **kwargs), key=repr)
        except OSError as exc:
            expected = (type(exc), exc.errno)
        assert got == expected, (args, kwargs)
    assert await loop.getnameinfo(("127.0.0.1", 80)) == socket.getnameinfo(("127.0.0.1", 80), 0)


@pytest.mark.timeout(90)
def test_the_exit_does_not_wait_for_a_call_stuck_in_the_default_thread_pool() -> None:
    """A call left blocked in the loop's default thread pool (as a name lookup is while
    the resolver does not answer) holds up neither the loop's close nor the interpreter's
    exit: the process ends with the coroutine's result."""
    done = _reading_a_silent_pipe(
        """
        import asyncio, os
        from wfe_daemon.runtime.eventloop import DefaultThreads, new_loop, run

        async def main() -> str:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, os.read, READ_END, 1)  # blocks until the pipe closes
            await asyncio.sleep(0.1)
            return "done"

        print(run(main()), flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "done"
    assert "eventloop.threads_left" in done.stdout + done.stderr


def _reading_a_silent_pipe(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (with :data:`SHORT_BOUNDS`), ``READ_END`` in it the read end of a
    pipe nothing writes to while it runs: a read of it blocks. Fail past 60 s."""
    read_end, write_end = os.pipe()
    code = SHORT_BOUNDS + textwrap.dedent(script).replace("READ_END", str(read_end))
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
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
        pytest.fail("the process still waited for the blocked read after 60 s")
    finally:
        os.close(write_end)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


SHORT_BOUNDS = """
import wfe_daemon.runtime.eventloop as eventloop
eventloop.SHUTDOWN_WAIT_S, eventloop.CLOSE_WAIT_S = 1.0, 2.0  # what counts is that they end
"""

SILENT_DNS = (
    SHORT_BOUNDS
    + """
import asyncio, os, socket, threading
from wfe_daemon.runtime.eventloop import run, run_to_exit

server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 53))  # bound before any lookup: none is refused
asked = threading.Event()

def blackhole() -> None:  # a name server that never answers
    while True:
        server.recv(512)
        asked.set()

async def until_asked() -> None:
    for _ in range(600):
        if asked.is_set():
            return
        await asyncio.sleep(0.05)
    print("the name server was not asked", flush=True)  # nscd, systemd-resolved: no test
    os._exit(98)

threading.Thread(target=blackhole, daemon=True).start()
"""
)

LOOKUP = (
    SILENT_DNS
    + """
async def main() -> str:
    loop = asyncio.get_running_loop()
    for n in range(40):  # more than either pool has threads
        loop.create_task(loop.getaddrinfo(f"scheduler{n}.example", 8786))  # as tornado asks
    await until_asked()
    # The default pool is not held up by the lookups (a hang would take minutes).
    return await asyncio.wait_for(asyncio.to_thread(str, "done"), 30)

print("result", run(main()), flush=True)
"""
)

LIBUV_LOOKUP = (
    SILENT_DNS
    + """
async def main() -> int:
    loop = asyncio.get_running_loop()
    connect = loop.create_connection(asyncio.Protocol, "scheduler.example", 8786)
    loop.create_task(connect)  # uvloop looks the name up in libuv's own thread pool
    await until_asked()
    if RAISE:
        raise LookupError("main failed")
    return 7

run_to_exit(main(), lambda exc: 3 if isinstance(exc, LookupError) else 1)
"""
)


def _with_a_silent_name_server(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a private network and mount namespace whose ``/etc/resolv.conf``
    names a server on 127.0.0.1 that never answers (as a container's is once its network
    is gone); skip where the namespace cannot be made, or where the system's resolver does
    not ask that server (nscd, systemd-resolved)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    for unshare in (["unshare", "-nm"], ["unshare", "-rnm"]):  # as root, else in a user ns
        if subprocess.run([*unshare, "true"], capture_output=True, check=False).returncode == 0:
            break
    else:
        pytest.skip("needs root or user namespaces for unshare -nm")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:5\n")
    setup = (
        'ip link set lo up || exit 97; mount --bind "$1" /etc/resolv.conf || exit 97;'
        ' exec "$2" -c "$3"'
    )
    proc = subprocess.Popen(
        [*unshare, "sh", "-c", setup, "sh", str(resolv), sys.executable, script],
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
    if proc.returncode == 98:
        pytest.skip("the system resolver does not ask the name server in /etc/resolv.conf")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.timeout(120)
def test_the_exit_does_not_wait_for_a_name_lookup_the_resolver_never_answers(
    tmp_path: Path,
) -> None:
    """Name lookups asked of the loop (as Dask's client, httpx and aiohttp ask) while the
    resolver never answers run in a pool of their own, not libuv's: they hold up neither
    the default pool's calls nor the exit, which does not wait for them (no
    ``eventloop.threads_left``), and the bound on the loop's close need not cut in."""
    done = _with_a_silent_name_server(tmp_path, LOOKUP)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "result done"
    assert "eventloop.threads_left" not in done.stdout + done.stderr
    assert "eventloop.close_stuck" not in done.stdout + done.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("raises", "status"), [(False, 7), (True, 3)])
def test_a_loop_close_stuck_on_libuv_ends_the_process_with_its_status(
    tmp_path: Path, raises: bool, status: int
) -> None:
    """A lookup pending in libuv's own pool (a ``create_connection`` to a host name) holds
    up uvloop's close without end: :func:`run_to_exit` gives it :data:`CLOSE_WAIT_S`, then
    the process exits with the coroutine's status (the status of its error when it
    raised) and says so at warning."""
    done = _with_a_silent_name_server(tmp_path, f"RAISE = {raises}\n" + LIBUV_LOOKUP)
    assert done.returncode == status, done.stderr
    assert "eventloop.close_stuck" in done.stdout + done.stderr


@pytest.mark.timeout(90)
def test_the_exit_ends_with_its_status_when_a_thread_it_joins_is_stuck() -> None:
    """A thread the interpreter's exit joins (not a daemon thread: anyio's worker threads,
    the standard thread pools of libraries) that stays blocked holds the exit up
    :data:`CLOSE_WAIT_S` at most: the process then ends with the status
    :func:`run_to_exit` returned, and says so at warning."""
    done = _reading_a_silent_pipe(
        """
        import os, sys, threading
        from wfe_daemon.runtime.eventloop import run_to_exit

        async def main() -> int:
            threading.Thread(target=os.read, args=(READ_END, 1)).start()  # never returns
            return 5

        sys.exit(run_to_exit(main(), lambda exc: 1))
        """
    )
    assert done.returncode == 5, done.stderr
    assert "eventloop.close_stuck" in done.stdout + done.stderr


DAEMON = (
    SILENT_DNS
    + """
import signal, subprocess, sys

async def started(proc: subprocess.Popen[str], lines: list[str]) -> None:
    while not any('"daemon.started"' in line for line in lines):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.1)
    await until_asked()  # the client is looking the scheduler's name up

def read(proc: subprocess.Popen[str], lines: list[str]) -> None:
    lines.extend(proc.stdout)

proc = subprocess.Popen(
    [sys.executable, "-m", "wfe_daemon", "run"], stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT, text=True,
)
lines: list[str] = []
reader = threading.Thread(target=read, args=(proc, lines))
reader.start()
try:
    run(started(proc, lines))
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(60)
except subprocess.TimeoutExpired:
    status = "still running 60 s after SIGTERM"
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    reader.join()
print("".join(lines), flush=True)
print("status", status, flush=True)
"""
)


@pytest.mark.timeout(120)
def test_the_daemon_exits_while_its_dask_schedulers_name_never_resolves(
    tmp_path: Path,
) -> None:
    """The daemon, its Dask scheduler a host name the resolver never answers for (a
    compose deployment stopping all at once), exits 0 on SIGTERM after ``daemon.stopped``,
    neither waiting for the lookups nor needing the bound on its exit."""
    env = {
        "WFE_INBOX": tmp_path / "inbox",
        "WFE_OUTBOX": tmp_path / "outbox",
        "WFE_DB_PATH": tmp_path / "wfe.db",
        "WFE_DATA_DIR": tmp_path / "data",
        "WFE_EXECUTOR": "dask",
        "WFE_DASK_SCHEDULER": "tcp://scheduler.example:8786",
        "WFE_REMOTE_TYPES": "sleep",
    }
    script = f"import os\nos.environ.update({ {k: str(v) for k, v in env.items()}!r})\n"
    done = _with_a_silent_name_server(tmp_path, script + DAEMON)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "status 0", done.stdout
    assert '"daemon.stopped"' in done.stdout
    assert "eventloop.threads_left" not in done.stdout
    assert "eventloop.close_stuck" not in done.stdout
