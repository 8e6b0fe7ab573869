"""The ``data_dir`` sandbox: every path a task reads or writes goes through here.

A path param is relative to ``data_dir``. An absolute path, a ``..`` component, or a
symlink (anywhere along the path) that leads out of ``data_dir`` is refused with
:class:`~wfe_daemon.errors.PathEscapeError`. Files are written atomically: to a temporary
file beside the target, renamed into place once complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from wfe_daemon.errors import PathEscapeError


def data_path(data_dir: Path, relative: str, *, param: str = "path") -> Path:
    """Resolve ``relative`` inside ``data_dir`` (symlinks followed) and check it stays there.

    The file need not exist (an output path); its parent folders are not created here.

    Raises:
        PathEscapeError: ``relative`` is empty, absolute, has a ``..`` component, or
            resolves (through symlinks) outside ``data_dir``.
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
    return target


@contextmanager
def atomic_write(target: Path, mode: str = "w", **open_kwargs: object) -> Iterator[IO[str]]:
    """Write ``target`` through a temporary file in its folder, renamed in on success.

    Parent folders are created. On any error the temporary file is removed and ``target``
    is left as it was, so a reader never sees a half-written file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:  # type: ignore[call-overload]
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
