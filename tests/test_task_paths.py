"""The data_dir sandbox that every file-touching task goes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from wfe_daemon.errors import PathEscapeError
from wfe_daemon.tasks._paths import atomic_write, data_path


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
