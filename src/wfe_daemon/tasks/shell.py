"""``shell``: run one program from an argv list, opt-in through ``enable_shell``.

The program runs in a session of its own, so stopping it means signalling its whole
process group: on a timeout or a cancellation, and when something the program left
running still holds its output a second after it exited. Stopping is SIGTERM, a grace,
then SIGKILL; on a timeout the grace is part of it: SIGTERM comes a grace of
``min(2 s, a quarter of the timeout)`` before it, SIGKILL at it, so the node ends by its
timeout. The timeout is the nearer of the ``timeout`` param and the node's own (the
engine's deadline). The environment is scrubbed: the child sees only the ``env`` param
and a minimal ``PATH``. Output is read concurrently from both pipes and capped.

The child is started by :class:`subprocess.Popen`, not the event loop: uvloop's spawn
leaves copies of the pipes open in the child under other descriptor numbers, so a
background process that detached properly (``setsid cmd >/dev/null 2>&1 </dev/null &``)
still held them, and the node waited on it. What the program leaves running without its
output has detached from the node: it is neither waited for nor stopped. The child asks
the kernel to SIGKILL it when the daemon dies (``PR_SET_PDEATHSIG``), so a daemon killed
by SIGKILL leaves no program of a node running; what the program started in its group is
left to the service manager (systemd kills the unit's whole cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

from wfe_daemon.core.masking import MASKER
from wfe_daemon.errors import TaskFailed, TaskTimeout
from wfe_daemon.runtime.task import Output, Params, TaskContext
from wfe_daemon.taskgroup import BackgroundTasks, background_tasks

MINIMAL_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_CAP_BYTES: Final = 64 * 1024
"""What is kept of stdout and of stderr, each; the rest is read and discarded."""

_RESERVED_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_")
_TERM_GRACE_S: Final = 2.0
_TERM_SHARE: Final = 0.25
"""On a timeout, SIGTERM comes this share of the timeout (at most the grace) before it."""
_DRAIN_GRACE_S: Final = 2.0
_SETTLE_S: Final = 1.0
"""How long output may stay open after the program exits before its group is stopped."""
_POLL_S: Final = 0.05
_CHUNK: Final = 64 * 1024
_ERROR_TAIL_CHARS: Final = 400
_PR_SET_PDEATHSIG: Final = 1


class ShellTask:
    """Runs ``argv`` (never through a shell) in ``data_dir``; refused unless enabled."""

    type: ClassVar[str] = "shell"
    display_name: ClassVar[str] = "Shell command"
    description: ClassVar[str] = (
        "Runs one program from an argv list (never a shell string) in its own process "
        "group, with a scrubbed environment (only `env` plus a minimal PATH) and stdin "
        "from /dev/null. Refused unless the `enable_shell` setting is true. On a timeout "
        "or cancellation its whole process group is stopped, grandchildren included: "
        "SIGTERM, then SIGKILL by the timeout. Once the program exits, what it left "
        "running is stopped only if it still holds the output a second later; a process "
        "that detached (setsid, output redirected) is left running."
    )
    category: ClassVar[str] = "system"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "argv": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "The program and its arguments; the program is looked up "
                f"in the child's PATH (default {MINIMAL_PATH}).",
            },
            "cwd": {
                "type": "string",
                "description": "Working directory, relative to data_dir (default: data_dir).",
            },
            "env": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The child's whole environment, besides PATH (which it may "
                "override); NOTIFY_SOCKET and WATCHDOG_* are refused.",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Seconds the program may run; the node's timeout applies "
                "as well, and the nearer one counts. SIGTERM comes min(2 s, a quarter of "
                "it) before, SIGKILL at it.",
            },
        },
        "required": ["argv"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None
    output_doc: ClassVar[Mapping[str, str]] = {
        "returncode": "The exit code (always 0 on success).",
        "stdout": f"Standard output as UTF-8 (undecodable bytes replaced), at most "
        f"{OUTPUT_CAP_BYTES} bytes kept, with a note when truncated.",
        "stderr": "Standard error, decoded and capped the same way.",
    }
    failure_doc: ClassVar[Sequence[str]] = (
        "`enable_shell` is false (the default).",
        "`cwd` is absolute, uses `..`, leads out of data_dir, or is not a directory.",
        "`env` names NOTIFY_SOCKET or WATCHDOG_*.",
        "The program is not found or cannot be executed.",
        "The program exits with a non-zero code or is killed by a signal "
        "(the error gives the code and the tail of stderr).",
        "The `timeout` param or the node's timeout expires (the process group is killed by then).",
        "A process that left the group (setsid) still holds stdout or stderr.",
    )

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        if not ctx.settings.enable_shell:
            raise TaskFailed(
                "the shell task is disabled; set enable_shell = true in the configuration "
                "(or WFE_ENABLE_SHELL=1) to allow it"
            )
        argv = list(params["argv"])
        cwd = _working_dir(ctx, params.get("cwd"))
        env = _environment(params.get("env", {}))
        loop = asyncio.get_running_loop()
        kill_at, ours = _kill_time(loop.time(), params.get("timeout"), ctx.deadlines.remaining())
        proc = _spawn(argv, cwd, env)
        async with background_tasks() as tasks:  # the waits on the program and its pipes
            child = await _Child.start(proc, tasks)
            exited = False
            try:
                exited = await child.wait_leader(until=_term_time(loop.time(), kill_at))
            finally:
                # A timeout or a cancellation stops the whole group; an exit, what holds
                # the output.
                await _shielded(tasks, child.reap(kill_at, exited=exited))
        if not exited:
            assert kill_at is not None  # without a deadline, only the exit ends the wait
            if not ours:  # the node's deadline: the engine's timeout ends it, a moment on
                await asyncio.sleep(max(0.0, kill_at - loop.time()) + _POLL_S)
            raise TaskTimeout(
                f"{argv[0]}: timed out after {params['timeout']:g}s; process group killed"
                if ours
                else f"{argv[0]}: timed out; process group killed"
            )
        if child.reading.cancelled():  # see reap: never re-raise its cancel as ours
            raise TaskFailed(f"{argv[0]}: a process that left its group kept the output open")
        (out, out_total), (err, err_total) = child.reading.result()
        stdout, stderr = _decode(out, out_total), _decode(err, err_total)
        returncode = child.proc.returncode
        assert returncode is not None  # reap waited for the leader
        if returncode != 0:
            raise TaskFailed(f"{argv[0]}: {_exit_reason(returncode)}{_tail(stderr)}")
        return {"returncode": returncode, "stdout": stdout, "stderr": stderr}


def _kill_time(
    now: float, param_s: float | None, node_s: float | None
) -> tuple[float | None, bool]:
    """When the group must be dead (loop time, or ``None``), and whether the ``timeout``
    param sets it (else the node's deadline does)."""
    limits = [(s, ours) for s, ours in ((param_s, True), (node_s, False)) if s is not None]
    if not limits:
        return None, False
    seconds, ours = min(limits, key=lambda limit: (limit[0], not limit[1]))  # a tie: the param
    return now + seconds, ours


def _term_time(now: float, kill_at: float | None) -> float | None:
    """When SIGTERM goes out: a grace before ``kill_at``, part of the timeout."""
    if kill_at is None:
        return None
    return kill_at - min(_TERM_GRACE_S, _TERM_SHARE * max(0.0, kill_at - now))


def _working_dir(ctx: TaskContext, cwd: str | None) -> Path:
    path = ctx.data_dir.resolve() if cwd is None else ctx.path(cwd, param="cwd")
    if not path.is_dir():
        raise TaskFailed(f"cwd: {cwd or str(ctx.data_dir)!r} is not an existing directory")
    return path


def _environment(given: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: ``given`` plus a minimal PATH; the daemon's is never inherited."""
    for key in given:
        if key.startswith(_RESERVED_ENV):
            raise TaskFailed(f"env: {key} is reserved for the daemon's service manager")
    return {"PATH": MINIMAL_PATH, **given}


def _spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches grandchildren
            preexec_fn=_die_with_parent(os.getpid()),
        )
    except FileNotFoundError as exc:
        where = "" if "/" in argv[0] else f" in PATH {env['PATH']}"
        raise TaskFailed(f"program not found: {argv[0]!r}{where}") from exc
    except PermissionError as exc:
        raise TaskFailed(f"cannot execute {argv[0]!r}: permission denied") from exc
    except OSError as exc:
        raise TaskFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # an embedded NUL byte, or '=' in an env name
        raise TaskFailed(f"cannot start {argv[0]!r}: {exc}") from exc


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the daemon (never in a forked child)."""
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return function


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when the daemon dies.

    The signal follows the thread that forked the child: here the event loop's, which
    lives as long as the daemon. It runs between fork and exec, and calls only a C
    function resolved beforehand, so no lock another thread held at the fork is needed.
    """
    prctl = _prctl()
    if prctl is None:
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the daemon died before the request took
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class _Child:
    """A started program: its exit, and its two pipes read on the event loop."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        exit: asyncio.Task[None],
        reading: asyncio.Task[Any],
        transports: list[asyncio.BaseTransport],
    ) -> None:
        self.proc, self.exit, self.reading, self._transports = proc, exit, reading, transports

    @classmethod
    async def start(cls, proc: subprocess.Popen[bytes], tasks: BackgroundTasks) -> _Child:
        """Connect the pipes of ``proc``; its exit and its output are awaited in ``tasks``."""
        loop = asyncio.get_running_loop()
        readers: list[asyncio.StreamReader] = []
        transports: list[asyncio.BaseTransport] = []
        try:
            for pipe in (proc.stdout, proc.stderr):
                reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
                transport, _ = await loop.connect_read_pipe(
                    functools.partial(asyncio.StreamReaderProtocol, reader), pipe
                )
                readers.append(reader)
                transports.append(transport)
        except BaseException:  # cancelled before both pipes were connected
            for connected in transports:
                connected.close()
            _kill_now(proc)
            raise
        reading = tasks.create_task(_read_both(readers[0], readers[1]))
        return cls(proc, tasks.create_task(_wait_exit(proc)), reading, transports)

    async def wait_leader(self, *, until: float | None) -> bool:
        """Wait for the program itself to exit (not for what it left running); ``False``
        when loop time ``until`` came first."""
        timeout = None if until is None else max(0.0, until - asyncio.get_running_loop().time())
        await asyncio.wait([self.exit], timeout=timeout)
        return self.exit.done()

    async def reap(self, kill_at: float | None, *, exited: bool) -> None:
        """Stop what must stop, wait for the leader, let the readers reach EOF (bounded).

        Once the program has exited by itself, what it left running is stopped only if
        it still holds the output a moment later: a process that let go of the pipes has
        detached from the node (or is about to: ``setsid`` may not have run yet).
        """
        if exited:
            await asyncio.wait([self.reading], timeout=_SETTLE_S)
        if not self.reading.done():
            await _stop_group(self.proc.pid, kill_at)  # the leader's pid is the group id
            await asyncio.wait([self.exit])
            await asyncio.wait([self.reading], timeout=_DRAIN_GRACE_S)
        if not self.reading.done():
            # Only a process that left the group (setsid) can still hold the pipes open.
            self.reading.cancel()
            await asyncio.wait([self.reading])
        await asyncio.wait([self.exit])
        for transport in self._transports:
            transport.close()


def _kill_now(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()


async def _wait_exit(proc: subprocess.Popen[bytes]) -> None:
    """Return once ``proc`` has exited (and is reaped): woken by a pidfd where the
    kernel has them, else by polling."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # an older kernel or another system
        while proc.poll() is None:  # noqa: ASYNC110 - nothing to wait on
            await asyncio.sleep(_POLL_S)
        return
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(pidfd, readable.set)
    try:
        while proc.poll() is None:
            await readable.wait()
            readable.clear()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _read_capped(stream: asyncio.StreamReader) -> tuple[bytes, int]:
    """Read ``stream`` to EOF, keeping the first bytes; returns them and the total size."""
    kept = bytearray()
    total = 0
    # Keep reading past the cap, so a chatty child never blocks on a full pipe.
    while chunk := await stream.read(_CHUNK):
        total += len(chunk)
        if len(kept) < OUTPUT_CAP_BYTES:
            kept += chunk[: OUTPUT_CAP_BYTES - len(kept)]
    return bytes(kept), total


async def _read_both(
    out: asyncio.StreamReader, err: asyncio.StreamReader
) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    both = await asyncio.gather(_read_capped(out), _read_capped(err))
    return both[0], both[1]


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; ``False`` when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _stop_group(pgid: int, kill_at: float | None) -> None:
    """SIGTERM the group, give it a grace (never past ``kill_at``), then SIGKILL what is left."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    loop = asyncio.get_running_loop()
    give_up = loop.time() + _TERM_GRACE_S
    if kill_at is not None:
        give_up = min(give_up, kill_at)
    while (left := give_up - loop.time()) > 0:
        await asyncio.sleep(min(_POLL_S, left))
        # The /proc scan of _group_alive reads a file per process: off the event loop.
        if not await asyncio.to_thread(_group_alive, pgid):
            return
    _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies do not count.

    Killed orphans are zombies until init reaps them, and some container inits never
    do: without this check every stop would wait out the whole grace.
    """
    if not _signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: trust the signal probe
        return True
    return any(entry.isdigit() and _live_member(entry, pgid) for entry in entries)


def _live_member(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:  # gone meanwhile
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()  # the command name may hold spaces
    return len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid


async def _shielded(tasks: BackgroundTasks, cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even when cancelled meanwhile; then re-raise the cancel.

    It runs in a task of ``tasks``: a cancel of this one (the engine's, a timeout's)
    cannot reach it, where an anyio shield would not stop asyncio's own cancel.
    """
    task = tasks.create_task(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


def _decode(data: bytes, total: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if total > len(data):
        text += f"\n[output truncated: {total} bytes in all, the first {len(data)} kept]"
    return text


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def _tail(stderr: str) -> str:
    """The end of stderr on one line, for the error message; secrets are masked before
    the cut, which could leave a part of one no longer recognisable."""
    text = " ".join(MASKER.text(stderr).split())
    if not text:
        return ""
    if len(text) > _ERROR_TAIL_CHARS:
        text = "..." + text[-_ERROR_TAIL_CHARS:]
    return f"; stderr: {text}"


TASKS = (ShellTask,)
