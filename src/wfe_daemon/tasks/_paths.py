"""Files the tasks write inside ``data_dir``, atomically.

A file is written to a temporary file beside the target and renamed into place once
complete. The target itself comes from :meth:`TaskContext.path
<wfe_daemon.runtime.task.TaskContext.path>`, the ``data_dir`` sandbox every path param goes through.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from wfe_daemon.errors import TaskFailed


class WriteFailed(TaskFailed):
    """Raised when a file a task writes in data_dir cannot be written (its folder cannot
    be created, is not writable, or the disk is full)."""


class AtomicFile:
    """A temporary file beside ``target``: :meth:`publish` renames it in, :meth:`discard`
    removes it. Each method blocks (fsync), so async callers run them in a thread.

    ``name`` is the path as the user wrote it, and ``param`` the param that gave it: a
    file that cannot be written fails with a :class:`TaskFailed` naming both and the
    reason (never the temporary file's name).
    """

    def __init__(
        self,
        target: Path,
        mode: str = "w",
        *,
        name: str | None = None,
        param: str = "path",
        **open_kwargs: Any,
    ) -> None:
        self.target = target
        self._name, self._param = name or str(target), param
        folder = str(PurePosixPath(self._name).parent)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._failed(f"cannot create its folder {folder!r}", exc) from exc
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
            )
        except OSError as exc:
            where = "data_dir" if folder == "." else f"the folder {folder!r}"
            raise self._failed(f"cannot create a file in {where}", exc) from exc
        self.tmp = Path(tmp_name)
        try:
            self.file: IO[Any] = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise

    def _failed(self, what: str, exc: OSError) -> WriteFailed:
        why = "Not a directory" if isinstance(exc, FileExistsError) else exc.strerror or exc
        return WriteFailed(f"{self._param}: cannot write {self._name!r}: {what}: {why}")

    def write_all(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` in order (one thread hop for a batch of them)."""
        try:
            self.file.writelines(chunks)
        except OSError as exc:
            raise self._failed("writing", exc) from exc

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
        except OSError as exc:
            self.discard()
            raise self._failed("saving", exc) from exc
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Close and remove the temporary file; ``target`` is left as it was."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(
    target: Path,
    mode: str = "w",
    *,
    cancelled: threading.Event | None = None,
    name: str | None = None,
    param: str = "path",
    **open_kwargs: Any,
) -> Iterator[IO[Any]]:
    """Write ``target`` through a temporary file in its folder, renamed in on success.

    Parent folders are created. On any error, or once ``cancelled`` is set, the temporary
    file is removed and ``target`` is left as it was, so a reader never sees a
    half-written file. ``name`` and ``param`` name the file in errors (see
    :class:`AtomicFile`).
    """
    out = AtomicFile(target, mode, name=name, param=param, **open_kwargs)
    try:
        yield out.file
    except BaseException:
        out.discard()
        raise
    out.publish(cancelled)
