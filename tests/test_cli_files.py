"""The command line reads the workflow files it is given safely: only regular files, bounded."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from test_cli import assert_one_line_error

Cli = Callable[..., subprocess.CompletedProcess[str]]
Writer = Callable[..., Path]


@pytest.mark.parametrize("command", ["validate", "execute", "graph"])
def test_a_device_is_refused_unread(run_cli: Cli, command: str, db_path: Path) -> None:
    """``/dev/zero`` (endless, size 0) is refused as not a regular file, exit 2, nothing run."""
    line = assert_one_line_error(run_cli(command, "/dev/zero"), 2)

    assert line == "wfe-daemon: cannot read /dev/zero: not a regular file (a character device)"
    assert not db_path.exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ["validate", "execute"])
def test_a_fifo_without_a_writer_is_refused_without_blocking(
    run_cli: Cli, tmp_path: Path, command: str
) -> None:
    """A named pipe nobody writes to is refused at once instead of waiting for a writer."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)

    line = assert_one_line_error(run_cli(command, fifo), 2)

    assert line == f"wfe-daemon: cannot read {fifo}: not a regular file (a named pipe)"


def test_a_directory_is_refused(run_cli: Cli, tmp_path: Path) -> None:
    """A folder given as the file is refused with the same one line."""
    line = assert_one_line_error(run_cli("validate", tmp_path), 2)

    assert line == f"wfe-daemon: cannot read {tmp_path}: not a regular file (a directory)"


def test_a_file_whose_size_lies_is_read_no_further_than_max_file_size(run_cli: Cli) -> None:
    """A regular file that reports size 0 but holds more (``/proc/cpuinfo``) is judged by what
    is read, never more than ``max_file_size`` bytes, and rejected as over the limit."""
    assert os.stat("/proc/cpuinfo").st_size == 0
    assert len(Path("/proc/cpuinfo").read_bytes()) > 100

    validated = run_cli("validate", "/proc/cpuinfo", env={"WFE_MAX_FILE_SIZE": "100"})

    assert validated.returncode == 2, validated.stderr
    assert validated.stderr == "file is over max_file_size 100\n"


def test_execute_rejects_a_file_found_over_max_file_size_while_reading(
    run_cli: Cli, sql: Callable[..., list[dict[str, object]]]
) -> None:
    """``execute`` records such a file as REJECTED with the same problem, as for any big file."""
    executed = run_cli("execute", "/proc/cpuinfo", env={"WFE_MAX_FILE_SIZE": "100"})

    assert executed.returncode == 2, executed.stderr
    summary = json.loads(executed.stdout)
    assert summary["status"] == "REJECTED"
    assert summary["errors"] == ["file is over max_file_size 100"]
    assert sql("SELECT status FROM workflowrun")[0]["status"] == "REJECTED"


def test_a_symlink_to_a_regular_file_is_read(
    run_cli: Cli, write_workflow: Writer, tmp_path: Path
) -> None:
    """A symlink is followed: what matters is that the file it names is a regular file."""
    target = write_workflow({"name": "w", "nodes": [{"id": "a", "type": "echo"}]})
    link = tmp_path / "link.json"
    link.symlink_to(target)

    result = run_cli("validate", link)

    assert (result.returncode, result.stderr) == (0, "")
