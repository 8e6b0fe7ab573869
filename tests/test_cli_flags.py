"""Global options of the command line: ``--version`` and a flag for each setting."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]
Writer = Callable[..., Path]


def test_version_prints_the_installed_version(run_cli: Cli) -> None:
    """``wfe-daemon --version`` prints the package's version on stdout and exits 0."""
    result = run_cli("--version")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"wfe-daemon {version('wfe-daemon')}\n"


def test_max_file_size_from_each_source_in_order(
    run_cli: Cli, write_workflow: Writer, tmp_path: Path
) -> None:
    """max_file_size: default < TOML < WFE_MAX_FILE_SIZE < --max-file-size, wherever it stands."""
    path = write_workflow(
        {"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {"pad": "x" * 300}}]}
    )
    toml = tmp_path / "small.toml"
    toml.write_text("max_file_size = 100\n")
    big_env = {"WFE_MAX_FILE_SIZE": "100000"}

    def accepted(*args: str | Path, env: dict[str, str] | None = None) -> bool:
        result = run_cli(*args, env=env)
        assert result.returncode in (0, 2) and "Traceback" not in result.stderr, result.stderr
        return result.returncode == 0

    assert accepted("validate", path)
    assert not accepted("validate", path, "--config", toml)
    assert accepted("validate", path, "--config", toml, env=big_env)
    assert not accepted("validate", path, "--max-file-size", "100", env=big_env)
    assert not accepted("--max-file-size", "100", "validate", path, env=big_env)
    assert accepted("validate", path, "--config", toml, "--max-file-size", "100000")


def test_db_path_and_log_level_flags_beat_environment_and_file(
    run_cli: Cli, write_workflow: Writer, tmp_path: Path, db_path: Path
) -> None:
    """--db-path decides where execute records and where runs reads; --log-level what is logged."""
    path = write_workflow({"name": "w", "nodes": [{"id": "a", "type": "echo"}]})
    toml = tmp_path / "quiet.toml"
    toml.write_text('log_level = "ERROR"\n')
    other = tmp_path / "elsewhere" / "other.db"

    executed = run_cli(
        "execute",
        path,
        "--db-path",
        other,
        "--config",
        toml,
        "--log-level",
        "info",
        env={"WFE_LOG_LEVEL": "ERROR"},
    )
    quiet = run_cli("execute", path, "--db-path", other, "--config", toml)

    assert executed.returncode == 0, executed.stderr
    assert "workflow.finished" in executed.stderr
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert not db_path.exists()  # WFE_DB_PATH of the test environment, overridden
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT count(*) FROM workflowrun").fetchone() == (2,)
    conn.close()
    listed = run_cli("runs", "--json", "--db-path", other)
    assert len(json.loads(listed.stdout)) == 2


def test_enable_shell_flag_pair_overrides_the_environment(
    run_cli: Cli, write_workflow: Writer
) -> None:
    """--enable-shell turns the shell task on over WFE_ENABLE_SHELL=0; --no-enable-shell off."""
    path = write_workflow(
        {"name": "sh", "nodes": [{"id": "s", "type": "shell", "params": {"argv": ["true"]}}]}
    )

    on = run_cli("execute", path, "--enable-shell", env={"WFE_ENABLE_SHELL": "0"})
    off = run_cli("execute", "--no-enable-shell", path, env={"WFE_ENABLE_SHELL": "1"})

    assert json.loads(on.stdout)["status"] == "SUCCESS", on.stderr
    assert off.returncode != 0
    assert json.loads(off.stdout)["status"] != "SUCCESS"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-concurrent-tasks", "0"], "config: --max-concurrent-tasks: must be >= 1, got 0"),
        (["--max-file-size", "lots"], "config: --max-file-size: must be an integer, got 'lots'"),
        (["--log-level", "loud"], "config: --log-level: must be one of DEBUG, INFO, WARNING,"),
        (["--http-deny-networks", "intranet"], "config: --http-deny-networks: must be CIDR"),
        (["--inbox", ""], "config: --inbox: must be a non-empty path string, got ''"),
    ],
)
def test_a_bad_flag_value_names_the_flag(run_cli: Cli, args: list[str], expected: str) -> None:
    """A bad value given as a flag stops the command with one line naming that flag, exit 2."""
    result = run_cli("runs", *args)

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"wfe-daemon: {expected}")


def test_a_flag_without_its_value_is_a_usage_error(run_cli: Cli) -> None:
    """``--db-path`` with nothing after it is a usage error on one line, not a traceback."""
    result = run_cli("runs", "--db-path")

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "--db-path" in line and "expected one argument" in line
