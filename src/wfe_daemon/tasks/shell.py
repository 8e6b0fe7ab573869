"""``shell``: run one program from an argv list, opt-in through ``enable_shell``.

The program runs in a session of its own, so stopping it means signalling its whole
process group: on a timeout, a cancellation, or once the program itself has exited
(whatever it left running in the background). Stopping is SIGTERM, a short grace,
then SIGKILL. The environment is scrubbed: the child sees only the ``env`` param and a
minimal ``PATH``. Output is read concurrently from both pipes and capped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

from wfe_daemon.errors import TaskFailed, TaskTimeout
from wfe_daemon.registry import Output, Params, TaskContext

MINIMAL_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_CAP_BYTES: Final = 64 * 1024
"""What is kept of stdout and of stderr, each; the rest is read and discarded."""

_RESERVED_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_")
_TERM_GRACE_S: Final = 2.0
_DRAIN_GRACE_S: Final = 2.0
_POLL_S: Final = 0.05
_CHUNK: Final = 64 * 1024
_ERROR_TAIL_CHARS: Final = 400


class ShellTask:
    """Runs ``argv`` (never through a shell) in ``data_dir``; refused unless enabled."""

    type: ClassVar[str] = "shell"
    display_name: ClassVar[str] = "Shell command"
    description: ClassVar[str] = (
        "Runs one program from an argv list (never a shell string) in its own process "
        "group, with a scrubbed environment (only `env` plus a minimal PATH) and stdin "
        "from /dev/null. Refused unless the `enable_shell` setting is true. On a timeout "
        "or cancellation, and once the program exits, its whole process group is "
        "stopped (SIGTERM, then SIGKILL), grandchildren included."
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
                "description": "Seconds before the process group is killed; the node's "
                "timeout applies as well.",
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
        "The `timeout` param expires (the process group is killed).",
    )

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        if not ctx.settings.enable_shell:
            raise TaskFailed(
                "the shell task is disabled; set enable_shell = true in the configuration "
                "(or WFE_ENABLE_SHELL=1) to allow it"
            )
        argv = list(params["argv"])
        cwd = _working_dir(ctx, params.get("cwd"))
        proc = await _spawn(argv, cwd, _environment(params.get("env", {})))
        reading = asyncio.create_task(_read_both(proc))
        limit_s = params.get("timeout")
        scope = asyncio.timeout(limit_s)
        try:
            async with scope:
                await _wait_leader(proc, reading)
        except TimeoutError:
            if not scope.expired():
                raise
        finally:
            # Whatever happened (exit, timeout, cancellation), nothing of the group survives.
            await _shielded(_reap(proc, reading))
        if scope.expired():
            raise TaskTimeout(f"{argv[0]}: timed out after {limit_s:g}s; process group killed")
        if reading.cancelled():  # see _reap: never re-raise its cancel as ours
            raise TaskFailed(f"{argv[0]}: a process that left its group kept the output open")
        (out, out_total), (err, err_total) = reading.result()
        stdout, stderr = _decode(out, out_total), _decode(err, err_total)
        returncode = proc.returncode
        assert returncode is not None  # _reap waited for the leader
        if returncode != 0:
            raise TaskFailed(f"{argv[0]}: {_exit_reason(returncode)}{_tail(stderr)}")
        return {"returncode": returncode, "stdout": stdout, "stderr": stderr}


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


async def _spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches grandchildren
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


async def _read_capped(stream: asyncio.StreamReader | None) -> tuple[bytes, int]:
    """Read ``stream`` to EOF, keeping the first bytes; returns them and the total size."""
    kept = bytearray()
    total = 0
    if stream is None:
        return b"", 0
    # Keep reading past the cap, so a chatty child never blocks on a full pipe.
    while chunk := await stream.read(_CHUNK):
        total += len(chunk)
        if len(kept) < OUTPUT_CAP_BYTES:
            kept += chunk[: OUTPUT_CAP_BYTES - len(kept)]
    return bytes(kept), total


async def _read_both(
    proc: asyncio.subprocess.Process,
) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    out, err = await asyncio.gather(_read_capped(proc.stdout), _read_capped(proc.stderr))
    return out, err


async def _wait_leader(proc: asyncio.subprocess.Process, reading: asyncio.Task[Any]) -> None:
    """Return once the program itself has exited.

    The pipes usually close as it exits; but a background child may hold them open,
    and ``Process.wait()`` would then wait for that child too.
    """
    while proc.returncode is None and not reading.done():
        await asyncio.wait([reading], timeout=_POLL_S)
    if proc.returncode is None:
        await proc.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; ``False`` when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _stop_group(pgid: int) -> None:
    """SIGTERM the group, give it a short grace, then SIGKILL what is left."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + _TERM_GRACE_S
    while time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
        if not _group_alive(pgid):
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


async def _reap(proc: asyncio.subprocess.Process, reading: asyncio.Task[Any]) -> None:
    """Stop the group, wait for the leader, and let the readers reach EOF (bounded)."""
    await _stop_group(proc.pid)  # the session leader's pid is the group id
    await asyncio.wait([reading], timeout=_DRAIN_GRACE_S)
    if not reading.done():
        # Only a process that left the group (setsid) can still hold the pipes open.
        reading.cancel()
        await asyncio.wait([reading])
        # Close our ends of the pipes; Process has no public way to, hence the private one.
        proc._transport.close()  # type: ignore[attr-defined]
        # Not proc.wait(): it would also wait for the pipes the escaped process holds.
        # The leader was killed above; the child watcher reports it shortly.
        while proc.returncode is None:  # noqa: ASYNC110 - asyncio offers no exit-only event
            await asyncio.sleep(_POLL_S)
    else:
        await proc.wait()


async def _shielded(cleanup: Awaitable[None]) -> None:
    """Run ``cleanup`` to its end even when cancelled meanwhile; then re-raise the cancel."""
    task = asyncio.ensure_future(cleanup)
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
    """The end of stderr on one line, for the error message."""
    text = " ".join(stderr.split())
    if not text:
        return ""
    if len(text) > _ERROR_TAIL_CHARS:
        text = "..." + text[-_ERROR_TAIL_CHARS:]
    return f"; stderr: {text}"


TASKS = (ShellTask,)
