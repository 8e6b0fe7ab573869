"""What the command line writes to its stdout: a reader that goes away early ends it quietly."""

from __future__ import annotations

import array
import fcntl
import json
import signal
import sqlite3
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CLI_TIMEOUT_S

Cli = Callable[..., subprocess.CompletedProcess[str]]
Writer = Callable[..., Path]

NODES = 2500
"""Enough nodes (and runs) that each listing is far beyond a pipe's 64 KiB buffer."""

SIGPIPE_STATUS = 141
"""128 + SIGPIPE: what a shell reports for ``cat`` or ``seq`` when the reader left early."""


def _big_workflow() -> dict[str, object]:
    nodes = [{"id": f"node{i:05d}", "type": "echo", "params": {"i": i}} for i in range(NODES)]
    return {"name": "wide", "nodes": nodes}


@pytest.fixture
def big_run(run_cli: Cli, write_workflow: Writer, db_path: Path) -> tuple[int, Path]:
    """One executed run of ``NODES`` nodes, its row copied until there are ``NODES`` runs."""
    path = write_workflow(_big_workflow(), "wide.json")
    done = run_cli("execute", path)
    assert done.returncode == 0, done.stderr
    run_id = int(json.loads(done.stdout)["run_id"])
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO workflowrun (name, status, source, started_at, finished_at, duration)"
            " SELECT name, status, source, started_at, finished_at, duration"
            " FROM workflowrun, n WHERE workflowrun.id = ?",
            (NODES, run_id),
        )
    conn.close()
    return run_id, path


def read_one_line_then_close(
    cwd: Path, env: dict[str, str], *args: str | Path, lines: int = 1
) -> tuple[bytes, int, str]:
    """Run the CLI with stdout on a pipe, read ``lines`` lines, close the pipe, and wait.

    With ``lines=0`` the pipe is closed before the command can write anything at all.
    Returns what was read, the exit status and everything written to stderr.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfe_daemon", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        read = b"".join(proc.stdout.readline() for _ in range(lines))
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace")
        return read, proc.wait(CLI_TIMEOUT_S), stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--limit", str(NODES + 1)],
        ["runs", "--limit", str(NODES + 1), "--json"],
        ["show", "RUN"],
        ["show", "RUN", "--json"],
        ["graph", "RUN"],
        ["graph", "FILE", "--format", "dot"],
    ],
    ids=["runs", "runs-json", "show", "show-json", "graph-run", "graph-file"],
)
def test_a_reader_that_leaves_after_one_line_ends_the_command_quietly(
    big_run: tuple[int, Path], tmp_path: Path, cli_env: dict[str, str], args: list[str]
) -> None:
    """``wfe-daemon runs | head -1`` (and show, graph): exit 141 as SIGPIPE would, no traceback,
    nothing at all on stderr, though far more output was due than the pipe could hold."""
    run_id, path = big_run
    args = [{"RUN": str(run_id), "FILE": str(path)}.get(arg, arg) for arg in args]

    read, status, stderr = read_one_line_then_close(tmp_path, cli_env, *args)

    assert read.endswith(b"\n")
    assert (status, stderr) == (SIGPIPE_STATUS, "")


@pytest.mark.parametrize("args", [["tasks"], ["tasks", "--json"], ["runs"]])
def test_a_reader_gone_before_the_first_write_ends_the_command_quietly(
    tmp_path: Path,
    cli_env: dict[str, str],
    args: list[str],
    run_cli: Cli,
    write_workflow: Writer,
) -> None:
    """A short listing whose reader has already closed the pipe ends the same quiet way."""
    if args == ["runs"]:  # one run to list (with no database, runs says so on stderr)
        path = write_workflow({"name": "one", "nodes": [{"id": "a", "type": "echo"}]})
        assert run_cli("execute", path).returncode == 0
    read, status, stderr = read_one_line_then_close(tmp_path, cli_env, *args, lines=0)

    assert (read, status, stderr) == (b"", SIGPIPE_STATUS, "")


PIPE_BYTES = 65536
"""What a Linux pipe holds by default: a writer with more to say waits once it is full."""


def _wait_pipe_full(fd: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the pipe read through ``fd`` holds ``PIPE_BYTES`` (its writer then waits)."""
    waiting = array.array("i", [0])
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        fcntl.ioctl(fd, termios.FIONREAD, waiting)
        if waiting[0] >= PIPE_BYTES:
            return
        time.sleep(0.01)
    raise AssertionError(f"the pipe never filled: {waiting[0]} bytes, status {proc.poll()}")


@pytest.mark.parametrize(
    "args",
    [["graph", "RUN"], ["runs", "--limit", str(NODES + 1), "--json"]],
    ids=["graph-run", "runs-json"],
)
def test_a_pause_and_resume_while_the_pipe_is_full_loses_nothing(
    big_run: tuple[int, Path], tmp_path: Path, cli_env: dict[str, str], args: list[str]
) -> None:
    """Ctrl-Z and ``fg`` (SIGSTOP, SIGCONT) while the command waits on a full pipe, as with
    ``wfe-daemon runs | less``: the reader still gets every byte, and the status is 0."""
    run_id, _path = big_run
    args = [str(run_id) if arg == "RUN" else arg for arg in args]
    command = [sys.executable, "-m", "wfe_daemon", *args]
    whole = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, check=True)
    assert len(whole.stdout) > 2 * PIPE_BYTES

    proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        _wait_pipe_full(proc.stdout.fileno(), proc)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        proc.send_signal(signal.SIGCONT)
        read = proc.stdout.read()
        assert (proc.wait(CLI_TIMEOUT_S), len(read)) == (0, len(whole.stdout))
        assert read == whole.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
