"""The ``data_dir`` sandbox: every path a task reads or writes goes through here.

A path param is relative to ``data_dir``. An absolute path, a ``..`` component, or a
symlink (anywhere along the path) that leads out of ``data_dir`` is refused with
:class:`~wfe_daemon.errors.PathEscapeError`, and so is the daemon's own database and its
companion files (the default ``db_path`` lies inside ``data_dir``). Tasks reach this
through :meth:`TaskContext.path <wfe_daemon.registry.TaskContext.path>`. Files are written
atomically: to a temporary file beside the target, renamed into place once complete.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from wfe_daemon.errors import PathEscapeError, TaskFailed

DB_COMPANIONS = ("-wal", "-shm", "-journal", ".lock")
"""Suffixes of the files SQLite and the daemon keep beside the database."""


def reserved_paths(db_path: Path) -> frozenset[Path]:
    """The resolved database file and its companions, which no task may touch."""
    db = db_path.resolve()
    return frozenset({db, *(db.with_name(db.name + suffix) for suffix in DB_COMPANIONS)})


def data_path(
    data_dir: Path, relative: str, *, param: str = "path", reserved: Collection[Path] = ()
) -> Path:
    """Resolve ``relative`` inside ``data_dir`` (symlinks followed) and check it stays there.

    The file need not exist (an output path); its parent folders are not created here.
    ``reserved`` holds resolved paths refused even inside ``data_dir`` (the daemon's
    database, see :func:`reserved_paths`).

    Raises:
        PathEscapeError: ``relative`` is empty, absolute, has a ``..`` component,
            resolves (through symlinks) outside ``data_dir``, or is reserved.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise PathEscapeError(f"{param}: must be a non-empty relative path, got {relative!r}")
    if "\x00" in relative:
        raise PathEscapeError(f"{param}: {relative!r} contains a NUL byte")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise PathEscapeError(f"{param}: {relative!r} is absolute; paths are relative to data_dir")
    if ".." in pure.parts:
        raise PathEscapeError(f"{param}: {relative!r} uses '..'; paths must stay in data_dir")
    root = data_dir.resolve()
    target = (root / pure).resolve()
    if target != root and not target.is_relative_to(root):
        raise PathEscapeError(f"{param}: {relative!r} leads out of data_dir through a symlink")
    if target in reserved:
        raise PathEscapeError(f"{param}: {relative!r} is the daemon's own database; refused")
    return target


class AtomicFile:
    """A temporary file beside ``target``: :meth:`publish` renames it in, :meth:`discard`
    removes it. Each method blocks (fsync), so async callers run them in a thread.
    """

    def __init__(self, target: Path, mode: str = "w", **open_kwargs: Any) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        self.target, self.tmp = target, Path(tmp_name)
        try:
            self.file: IO[Any] = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise

    def write_all(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` in order (one thread hop for a batch of them)."""
        self.file.writelines(chunks)

    def publish(self, cancelled: threading.Event | None = None) -> None:
        """Flush, fsync and rename into place, unless ``cancelled`` is set by then.

        Raises:
            TaskFailed: ``cancelled`` was set; the temporary file is removed.
        """
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            # Checked last, after the slow fsync: a cancelled node must not publish.
            if cancelled is not None and cancelled.is_set():
                raise TaskFailed("cancelled")
            os.replace(self.tmp, self.target)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Close and remove the temporary file; ``target`` is left as it was."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(
    target: Path, mode: str = "w", *, cancelled: threading.Event | None = None,
    **open_kwargs: Any,
) -> Iterator[IO[Any]]:
    """Write ``target`` through a temporary file in its folder, renamed in on success.

    Parent folders are created. On any error, or once ``cancelled`` is set, the temporary
    file is removed and ``target`` is left as it was, so a reader never sees a
    half-written file.
    """
    out = AtomicFile(target, mode, **open_kwargs)
    try:
        yield out.file
    except BaseException:
        out.discard()
        raise
    out.publish(cancelled)
