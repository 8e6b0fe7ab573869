"""The data_dir sandbox that every file-touching task goes through."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from wfe_daemon.config import Settings
from wfe_daemon.errors import PathEscapeError, TaskFailed
from wfe_daemon.runtime.task import Services, TaskContext, data_path
from wfe_daemon.tasks._paths import atomic_write


@contextmanager
def unwritable(folder: Path) -> Iterator[str]:
    """Make ``folder`` (created) refuse new files for this process; yield the reason the
    system gives. Root ignores chmod, so as root the folder is made immutable (chattr +i),
    and the test is skipped where that is not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            folder.chmod(0o755)
        return
    try:
        done = subprocess.run(
            ["chattr", "+i", str(folder)], capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError:
        pytest.skip("running as root, whom chmod does not stop, and chattr is not installed")
    if done.returncode != 0:
        pytest.skip(
            f"running as root, whom chmod does not stop, and chattr +i failed here "
            f"(not ext4/xfs, or no CAP_LINUX_IMMUTABLE): {done.stderr.strip()}"
        )
    try:
        yield "Operation not permitted"
    finally:
        subprocess.run(["chattr", "-i", str(folder)], timeout=10, check=True)


def test_relative_path_resolves_inside_data_dir(tmp_path: Path) -> None:
    """A plain relative path lands under data_dir, even when it does not exist yet."""
    assert data_path(tmp_path, "raw/sales.csv") == tmp_path.resolve() / "raw" / "sales.csv"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.csv", "a/../../x", "", "a\x00b"])
def test_escaping_paths_are_refused(tmp_path: Path, bad: str) -> None:
    """Absolute paths, '..', empty paths and NUL bytes are refused with a clear error."""
    with pytest.raises(PathEscapeError, match="path"):
        data_path(tmp_path, bad)


def test_symlink_out_of_data_dir_is_refused(tmp_path: Path) -> None:
    """A symlink inside data_dir that points outside it cannot be used to escape."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "out").symlink_to(tmp_path)
    with pytest.raises(PathEscapeError, match="symlink"):
        data_path(data, "out/secret.txt")


def test_symlink_inside_data_dir_is_fine(tmp_path: Path) -> None:
    """A symlink that stays inside data_dir is followed."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert data_path(tmp_path, "alias/f.csv") == tmp_path.resolve() / "real" / "f.csv"


def test_atomic_write_publishes_whole_file_or_nothing(tmp_path: Path) -> None:
    """A failed write leaves the old file and no temporary file; a good one replaces it."""
    target = tmp_path / "sub" / "out.csv"
    with atomic_write(target) as file:
        file.write("a,b\n")
    assert target.read_text() == "a,b\n"
    with pytest.raises(RuntimeError), atomic_write(target) as file:
        file.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "a,b\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]


def test_reserved_target_is_refused(tmp_path: Path) -> None:
    """A path in ``reserved`` is refused even though it lies inside data_dir."""
    reserved = {tmp_path.resolve() / "state.db"}
    with pytest.raises(PathEscapeError, match=r"'state.db' is the daemon's own database"):
        data_path(tmp_path, "state.db", param="output", reserved=reserved)
    assert data_path(tmp_path, "other.db", reserved=reserved) == tmp_path.resolve() / "other.db"


@pytest.mark.parametrize(
    "name",
    [
        "workflows.db",
        "workflows.db-wal",
        "workflows.db-shm",
        "workflows.db-journal",
        "workflows.db.lock",
        "./workflows.db",
        "alias.db",
    ],
)
def test_context_path_refuses_the_daemon_database(tmp_path: Path, name: str) -> None:
    """With db_path inside data_dir (the default layout), ctx.path refuses it and its companions."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "workflows.db").touch()
    (data / "alias.db").symlink_to(data / "workflows.db")
    settings = Settings(data_dir=data, db_path=data / "workflows.db")
    ctx = TaskContext(1, "wf", "n", 1, settings, Services())
    with pytest.raises(PathEscapeError, match="daemon's own database; refused"):
        ctx.path(name, param="database")
    assert ctx.path("mine.db", param="database") == data.resolve() / "mine.db"


def test_context_path_resolves_a_relative_db_path_against_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default, relative settings (data/workflows.db in data) still protect the database."""
    monkeypatch.chdir(tmp_path)
    ctx = TaskContext(1, "wf", "n", 1, Settings(), Services())
    with pytest.raises(PathEscapeError, match="daemon's own database"):
        ctx.path("workflows.db", param="output")


def test_atomic_write_does_not_publish_once_cancelled(tmp_path: Path) -> None:
    """A cancelled writer leaves the old file and no temporary file behind."""
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    cancelled = threading.Event()
    with (
        pytest.raises(TaskFailed, match="cancelled"),
        atomic_write(target, cancelled=cancelled) as file,
    ):
        file.write("new\n")
        cancelled.set()
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
