"""The one reader of workflow files: regular files only, never blocking, capped at max_size."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from wfe_daemon.service.reading import NotRegularFile, open_regular, read_capped, read_file


def test_a_regular_file_is_read_whole_with_its_fstat(tmp_path: Path) -> None:
    """A file within the limit comes back whole, with the size its fstat gave."""
    path = tmp_path / "w.json"
    path.write_bytes(b'{"name": "w"}')

    contents = read_file(path, 100)

    assert (contents.data, contents.stat.st_size) == (b'{"name": "w"}', 13)


def test_a_file_at_the_limit_is_read_and_one_byte_over_is_not(tmp_path: Path) -> None:
    """``max_size`` bytes are allowed; one more and the data is ``None``, unread."""
    path = tmp_path / "w.json"
    path.write_bytes(b"x" * 10)

    assert read_file(path, 10).data == b"x" * 10
    over = read_file(path, 9)
    assert (over.data, over.stat.st_size) == (None, 10)


def test_a_file_larger_than_its_fstat_says_is_cut_off_at_the_limit() -> None:
    """A size of 0 proves nothing (``/proc``): the read itself stops past ``max_size``."""
    proc = Path("/proc/self/status")
    if not proc.exists():
        pytest.skip("no /proc")

    contents = read_file(proc, 16, follow_symlinks=True)

    assert (contents.stat.st_size, contents.data) == (0, None)


def test_read_capped_stops_one_byte_past_the_limit(tmp_path: Path) -> None:
    """The capped read returns the bytes up to the limit, or ``None`` beyond it."""
    path = tmp_path / "big"
    path.write_bytes(b"y" * 5000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_capped(fd, 4999) is None
        os.lseek(fd, 0, os.SEEK_SET)
        assert read_capped(fd, 5000) == b"y" * 5000
    finally:
        os.close(fd)


@pytest.mark.parametrize("hint", [1, 4999, 5000, 9000])
def test_read_capped_reads_the_whole_file_whatever_its_size_hint(tmp_path: Path, hint: int) -> None:
    """A size hint that is wrong (the file grew or shrank since its fstat) changes no result."""
    path = tmp_path / "big"
    path.write_bytes(b"y" * 5000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_capped(fd, 5000, size_hint=hint) == b"y" * 5000
        os.lseek(fd, 0, os.SEEK_SET)
        assert read_capped(fd, 4999, size_hint=hint) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: path.mkdir(), "a directory"),
        (lambda path: os.mkfifo(path), "a named pipe"),
    ],
    ids=["directory", "fifo"],
)
def test_anything_but_a_regular_file_is_refused_unread(
    tmp_path: Path, make: Callable[[Path], None], kind: str
) -> None:
    """A folder or a named pipe without a writer is refused at once, naming its kind."""
    path = tmp_path / "odd.json"
    make(path)

    with pytest.raises(NotRegularFile) as refused:
        read_file(path, 100)

    assert refused.value.kind == kind
    assert isinstance(refused.value, OSError)


def test_a_symlink_is_followed_only_when_asked(tmp_path: Path) -> None:
    """Intake and recovery never follow a symlink (ELOOP); the commands do."""
    target = tmp_path / "real.json"
    target.write_bytes(b"{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)

    with pytest.raises(OSError):
        read_file(link, 100)
    assert read_file(link, 100, follow_symlinks=True).data == b"{}"


def test_open_regular_closes_its_descriptor(tmp_path: Path) -> None:
    """The descriptor yielded is closed when the block ends."""
    path = tmp_path / "w.json"
    path.write_bytes(b"{}")

    with open_regular(path) as (fd, info):
        assert info.st_size == 2

    with pytest.raises(OSError):
        os.fstat(fd)
