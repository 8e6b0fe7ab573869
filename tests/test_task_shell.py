"""Tests for the ``shell`` task, through the real engine on a real SQLite file."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, wait_running, wait_until
from wfe_daemon.config import Settings
from wfe_daemon.logs import configure_logging
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Services, TaskContext
from wfe_daemon.service.submission import submit
from wfe_daemon.store.database import Store
from wfe_daemon.tasks import BUILTINS
from wfe_daemon.tasks.shell import MINIMAL_PATH, OUTPUT_CAP_BYTES, ShellTask

RunShell = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The test's ``data_dir``, created, symlinks resolved."""
    path = tmp_path / "data"
    path.mkdir()
    return path.resolve()


@pytest.fixture
async def run_shell(tmp_path: Path, data_dir: Path) -> AsyncIterator[RunShell]:
    """Run one ``shell`` node through a real Engine; return that node's summary entry.

    ``run_shell(params, node_timeout=None, enable_shell=True)``; the store is closed at teardown.
    """
    configure_logging("WARNING", io.StringIO())
    async with Store.open(tmp_path / "wfe.db") as store:

        async def run(
            params: dict[str, Any], *, node_timeout: float | None = None, enable_shell: bool = True
        ) -> dict[str, Any]:
            settings = Settings(
                enable_shell=enable_shell, data_dir=data_dir, db_path=tmp_path / "wfe.db"
            )
            registry = TaskRegistry.load(BUILTINS, entry_point_group=None)
            engine = Engine(registry, store, settings)
            node: dict[str, Any] = {"id": "sh", "type": "shell", "params": params}
            if node_timeout is not None:
                node["timeout"] = node_timeout
            doc = {"name": "shell-test", "nodes": [node]}
            data = json.dumps(doc).encode()
            summary = await submit(
                data, registry=registry, store=store, engine=engine, source="test.json"
            )
            entry: dict[str, Any] = summary["nodes"]["sh"]
            return entry

        yield run


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone_soon(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` stops running within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """Pids a test expects to outlive its node; each still running is killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _pid_in(path: Path) -> int:
    """The pid a child wrote to ``path`` (waiting for it to be written)."""
    text = wait_until(lambda: path.exists() and path.read_text().strip(), 10, f"{path.name}")
    return int(text)


async def test_echo_output_is_captured(run_shell: RunShell) -> None:
    """A program's stdout, stderr and exit code become the node's output."""
    entry = await run_shell({"argv": ["sh", "-c", "echo hello world; echo note >&2"]})
    assert entry["status"] == "SUCCESS"
    assert entry["output"] == {"returncode": 0, "stdout": "hello world\n", "stderr": "note\n"}


async def test_shell_is_disabled_by_default(run_shell: RunShell) -> None:
    """Without enable_shell the node fails with an error that says how to enable it."""
    entry = await run_shell({"argv": ["echo", "hi"]}, enable_shell=False)
    assert entry["status"] == "FAILED"
    assert entry["error"].startswith("the shell task is disabled; set enable_shell = true")


async def test_nonzero_exit_fails_with_code_and_stderr(run_shell: RunShell) -> None:
    """A non-zero exit fails the node, naming the code and the tail of stderr."""
    entry = await run_shell({"argv": ["sh", "-c", "echo first >&2; echo last words >&2; exit 7"]})
    assert entry["status"] == "FAILED"
    assert entry["error"] == "sh: exited with code 7; stderr: first last words"


async def test_missing_program_is_a_clear_failure(run_shell: RunShell) -> None:
    """A program that is not in the minimal PATH fails with 'program not found'."""
    entry = await run_shell({"argv": ["wfe-no-such-program"]})
    assert entry["status"] == "FAILED"
    assert entry["error"] == (f"program not found: 'wfe-no-such-program' in PATH {MINIMAL_PATH}")


async def test_node_timeout_kills_the_process_group(run_shell: RunShell, data_dir: Path) -> None:
    """On the node timeout the whole process group dies, the background grandchild too."""
    argv = ["sh", "-c", "sleep 30 & echo $! > pid; wait"]
    started = time.monotonic()
    entry = await run_shell({"argv": argv}, node_timeout=0.5)
    assert entry["status"] == "FAILED"
    assert entry["error"] == "timed out after 0.5s"
    assert time.monotonic() - started < 10
    grandchild = int((data_dir / "pid").read_text())
    assert _gone_soon(grandchild)


async def test_timeout_param_kills_the_process_group(run_shell: RunShell, data_dir: Path) -> None:
    """The task's own ``timeout`` param also kills the group, with its own message."""
    entry = await run_shell(
        {"argv": ["sh", "-c", "sleep 30 & echo $! > pid; wait"], "timeout": 0.3}
    )
    assert entry["status"] == "FAILED"
    assert entry["error"] == "sh: timed out after 0.3s; process group killed"
    assert _gone_soon(int((data_dir / "pid").read_text()))


async def test_leftover_background_process_is_killed_after_exit(
    run_shell: RunShell, data_dir: Path
) -> None:
    """A background child still running when the program exits does not outlive the task."""
    started = time.monotonic()
    entry = await run_shell({"argv": ["sh", "-c", "sleep 30 & echo $! > pid; echo done"]})
    assert entry["status"] == "SUCCESS"
    assert entry["output"]["stdout"] == "done\n"
    assert time.monotonic() - started < 10  # it did not wait for sleep 30 to close the pipe
    assert _gone_soon(int((data_dir / "pid").read_text()))


async def test_cancellation_kills_the_group_and_propagates(data_dir: Path) -> None:
    """Cancelling the task kills its process group, then re-raises CancelledError."""
    ctx = TaskContext(1, "wf", "sh", 1, Settings(enable_shell=True, data_dir=data_dir), Services())
    params = {"argv": ["sh", "-c", "sleep 30 & echo $! > pid; wait"]}
    task = asyncio.create_task(ShellTask().execute(params, ctx))
    pid_file = data_dir / "pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone_soon(int(pid_file.read_text()))


async def test_environment_is_scrubbed(
    run_shell: RunShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child sees only the ``env`` param and a minimal PATH, never the daemon's variables."""
    monkeypatch.setenv("WFE_TEST_SECRET", "leaked")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    entry = await run_shell({"argv": ["env"], "env": {"GREETING": "hi"}})
    assert entry["status"] == "SUCCESS"
    assert sorted(entry["output"]["stdout"].splitlines()) == [
        "GREETING=hi",
        f"PATH={MINIMAL_PATH}",
    ]


async def test_reserved_env_names_are_refused(run_shell: RunShell) -> None:
    """Passing NOTIFY_SOCKET or WATCHDOG_* to the child is refused."""
    entry = await run_shell({"argv": ["env"], "env": {"WATCHDOG_USEC": "1000"}})
    assert entry["status"] == "FAILED"
    assert entry["error"] == "env: WATCHDOG_USEC is reserved for the daemon's service manager"


async def test_output_is_capped(run_shell: RunShell) -> None:
    """Each stream keeps its first 64 KiB and says how much there was; the child never blocks."""
    code = "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('y' * 100000)"
    entry = await run_shell({"argv": [sys.executable, "-c", code]})
    assert entry["status"] == "SUCCESS"
    stdout, stderr = entry["output"]["stdout"], entry["output"]["stderr"]
    assert stdout == "x" * OUTPUT_CAP_BYTES + (
        f"\n[output truncated: 300000 bytes in all, the first {OUTPUT_CAP_BYTES} kept]"
    )
    assert stderr.startswith("y" * OUTPUT_CAP_BYTES + "\n[output truncated: 100000 bytes")


async def test_cwd_is_inside_data_dir(run_shell: RunShell, data_dir: Path) -> None:
    """``cwd`` is relative to data_dir, and data_dir is the default."""
    (data_dir / "sub").mkdir()
    default = await run_shell({"argv": ["pwd", "-P"]})
    inside = await run_shell({"argv": ["pwd", "-P"], "cwd": "sub"})
    assert default["output"]["stdout"] == f"{data_dir}\n"
    assert inside["output"]["stdout"] == f"{data_dir / 'sub'}\n"


@pytest.mark.parametrize(
    ("cwd", "message"),
    [
        ("..", "cwd: '..' uses '..'; paths must stay in data_dir"),
        ("/tmp", "cwd: '/tmp' is absolute; paths are relative to data_dir"),
        ("out", "cwd: 'out' leads out of data_dir through a symlink"),
        ("missing", "cwd: 'missing' is not an existing directory"),
    ],
)
async def test_cwd_outside_data_dir_is_refused(
    run_shell: RunShell, data_dir: Path, tmp_path: Path, cwd: str, message: str
) -> None:
    """A ``cwd`` that is absolute, uses '..', escapes through a symlink or is missing fails."""
    (data_dir / "out").symlink_to(tmp_path)
    entry = await run_shell({"argv": ["pwd"], "cwd": cwd})
    assert entry["status"] == "FAILED"
    assert entry["error"] == message


def test_cli_execute_runs_shell_when_enabled(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    """``execute`` runs a shell node with WFE_ENABLE_SHELL=1 and refuses it without."""
    (tmp_path / "data").mkdir(exist_ok=True)
    path = write_workflow(
        {
            "name": "cli-shell",
            "nodes": [{"id": "hi", "type": "shell", "params": {"argv": ["echo", "from the CLI"]}}],
        }
    )
    enabled = run_cli("execute", path, env={"WFE_ENABLE_SHELL": "1"})
    assert enabled.returncode == 0, enabled.stderr
    node = json.loads(enabled.stdout)["nodes"]["hi"]
    assert node["output"] == {"returncode": 0, "stdout": "from the CLI\n", "stderr": ""}
    disabled = run_cli("execute", path)
    assert disabled.returncode == 2
    assert json.loads(disabled.stdout)["errors"] == [
        "node 'hi': shell is disabled: set enable_shell = true"
    ]


# -- detached processes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "detach",
    [
        "setsid sleep 30 >/dev/null 2>&1 </dev/null & echo $! > pid",
        "(setsid sh -c 'echo $$ > pid; exec sleep 30' </dev/null >/dev/null 2>&1 &)",
    ],
)
async def test_a_detached_process_leaves_the_node(
    run_shell: RunShell, data_dir: Path, stray_pids: list[int], detach: str
) -> None:
    """A program whose background process detached properly (own session, none of the
    node's pipes) succeeds at once, and the detached process is left running."""
    entry = await run_shell({"argv": ["sh", "-c", detach + "; echo started"]})
    stray_pids.append(_pid_in(data_dir / "pid"))
    assert entry["status"] == "SUCCESS", entry
    assert entry["output"]["stdout"] == "started\n"
    assert _running(stray_pids[0])


async def test_a_process_that_left_the_group_with_the_output_fails_the_node(
    run_shell: RunShell, data_dir: Path, stray_pids: list[int]
) -> None:
    """A process that left the group but still holds stdout fails the node, saying so."""
    entry = await run_shell({"argv": ["sh", "-c", "setsid sleep 30 & echo $! > pid"]})
    stray_pids.append(_pid_in(data_dir / "pid"))
    assert entry["status"] == "FAILED"
    assert entry["error"] == "sh: a process that left its group kept the output open"


# -- timeouts include the grace ---------------------------------------------------------------


IGNORES_TERM = "trap '' TERM; sleep 30 & echo $! > pid; wait"
"""A program whose whole group ignores SIGTERM (ignored signals are inherited)."""


async def test_a_child_ignoring_sigterm_ends_by_the_node_timeout(
    run_shell: RunShell, data_dir: Path
) -> None:
    """With a node timeout of 1 s, a group that ignores SIGTERM is killed at the timeout,
    not a kill grace later (it used to end after 3 s)."""
    started = time.monotonic()
    entry = await run_shell({"argv": ["sh", "-c", IGNORES_TERM]}, node_timeout=1)
    elapsed = time.monotonic() - started
    assert entry["status"] == "FAILED"
    assert entry["error"] == "timed out after 1s"
    assert elapsed < 2.5  # a behaviour bound: the old 1 s + 2 s grace took 3 s
    assert _gone_soon(int((data_dir / "pid").read_text()), within_s=0.5)


async def test_a_child_ignoring_sigterm_ends_by_the_timeout_param(
    run_shell: RunShell, data_dir: Path
) -> None:
    """The ``timeout`` param includes the grace too, and its message names it."""
    started = time.monotonic()
    entry = await run_shell({"argv": ["sh", "-c", IGNORES_TERM], "timeout": 1})
    elapsed = time.monotonic() - started
    assert entry["status"] == "FAILED"
    assert entry["error"] == "sh: timed out after 1s; process group killed"
    assert elapsed < 2.5  # a behaviour bound, as above
    assert _gone_soon(int((data_dir / "pid").read_text()), within_s=0.5)


async def test_sigterm_comes_within_the_timeout(run_shell: RunShell, data_dir: Path) -> None:
    """A program that handles SIGTERM gets it before the node's timeout and may clean up."""
    script = "trap 'echo cleaned > done; exit 3' TERM; sleep 30 & wait"
    entry = await run_shell({"argv": ["sh", "-c", script]}, node_timeout=2)
    assert entry["error"] == "timed out after 2s"
    assert (data_dir / "done").read_text() == "cleaned\n"


# -- the daemon killed by SIGKILL -----------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        "echo $$ > pid; exec sleep 300",
        "trap '' TERM HUP INT; echo $$ > pid; exec sleep 300",  # a sleep that ignores SIGTERM
    ],
)
def test_a_killed_daemon_leaves_no_program_behind(daemons: Daemons, script: str) -> None:
    """When ``wfe-daemon run`` dies by SIGKILL while a shell node runs ``sleep 300``, the
    sleep (even one ignoring SIGTERM) dies with it: the kernel kills it (PR_SET_PDEATHSIG)."""
    daemons.data_dir.mkdir(parents=True)
    daemon = daemons.start(WFE_ENABLE_SHELL="1")
    doc = {
        "name": "long",
        "nodes": [{"id": "sh", "type": "shell", "params": {"argv": ["sh", "-c", script]}}],
    }
    drop(daemons.inbox, "long.json", doc)
    wait_running(daemons.db_path, "sh")
    pid = _pid_in(daemons.data_dir / "pid")
    try:
        assert _running(pid)
        daemon.kill()
        assert _gone_soon(pid), "the shell node's program outlived the daemon"
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
