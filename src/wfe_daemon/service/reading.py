"""Reading a workflow file: a regular file, opened without blocking, capped at ``max_size``.

Every reader of a workflow file goes through here: intake (a file it is about to claim),
crash recovery (a file left in ``processing/``), the commands (``execute``, ``validate``,
``graph``) and ``retry`` (the original of a run whose secrets were redacted). The open
never blocks (a named pipe without a writer is refused, not waited on), a folder, device,
pipe or socket is refused unread, and no more than ``max_size`` bytes are kept: a size of
0 proves nothing (``/proc`` files) and a file may grow after its ``fstat``, so the read
itself stops one byte past the limit.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileContents", "NotRegularFile", "open_regular", "read_capped", "read_file"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)
_CHUNK = 1 << 20


class NotRegularFile(OSError):
    """Raised when the path opened is a folder, a device, a pipe or a socket (``kind``)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", str(path))
        self.kind = kind


@dataclass(frozen=True, slots=True)
class FileContents:
    """A file as read: ``data`` is ``None`` when it holds more than the ``max_size`` asked.

    ``stat`` is the file's ``fstat`` when it was opened (``st_size`` may lie: see the module).
    """

    data: bytes | None
    stat: os.stat_result


@contextmanager
def open_regular(
    path: Path, *, follow_symlinks: bool = False
) -> Iterator[tuple[int, os.stat_result]]:
    """Open ``path`` for reading without blocking; ``(fd, fstat)``, the fd closed on exit.

    Raises:
        NotRegularFile: it is not a regular file (nothing of it is read).
        OSError: it cannot be opened (gone, a symlink when not following them: ELOOP).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "special")
            raise NotRegularFile(path, kind)
        yield fd, info
    finally:
        os.close(fd)


def read_capped(fd: int, max_size: int, *, size_hint: int = 0) -> bytes | None:
    """Read ``fd`` to its end, or ``None`` once it holds more than ``max_size`` bytes.

    ``size_hint`` (the file's ``st_size``, when known) sizes the first read: each read
    allocates the whole buffer it asks for, and a 1 MiB one is a memory mapping of its own
    (mapped, shrunk and unmapped again) for a file of a few hundred bytes.
    """
    chunks: list[bytes] = []
    remaining = max_size + 1
    step = min(size_hint + 1, _CHUNK) if size_hint > 0 else _CHUNK
    while remaining > 0 and (chunk := os.read(fd, min(remaining, step))):
        chunks.append(chunk)
        remaining -= len(chunk)
        step = _CHUNK
    return None if remaining <= 0 else b"".join(chunks)


def read_file(path: Path, max_size: int, *, follow_symlinks: bool = False) -> FileContents:
    """The bytes of the regular file ``path``, unless it is larger than ``max_size``.

    A file whose ``fstat`` says it is too large is not read at all.

    Raises:
        NotRegularFile: it is not a regular file (nothing of it is read).
        OSError: it cannot be opened or read.
    """
    with open_regular(path, follow_symlinks=follow_symlinks) as (fd, info):
        if info.st_size > max_size:
            return FileContents(None, info)
        return FileContents(read_capped(fd, max_size, size_hint=info.st_size), info)
