"""stdout and stderr whose every write completes, or raises.

A write to a full pipe that a signal interrupts part-way returns a short count: after a
Ctrl-Z and ``fg`` on ``wfe-daemon runs | less``, say, or a SIGHUP to the daemon while
journald is slow. CPython's own text streams then drop the rest of that write without a
word, so a listing would end early with exit status 0, or a log line lose its tail. Here
the raw layer writes again until every byte is out, and a reader that went away still
surfaces as ``BrokenPipeError``.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO


class _WholeWrites(io.RawIOBase):
    """A file descriptor we write to but do not own: closing this leaves it open."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: object) -> int:
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        return done


def _rewrap(stream: TextIO) -> TextIO:
    """``stream`` on whole writes, buffered as it was: an unbuffered one (``PYTHONUNBUFFERED``,
    a raw file under a written-through text layer) still writes every call at once."""
    raw = _WholeWrites(stream.fileno())
    if isinstance(getattr(stream, "buffer", None), io.RawIOBase):
        return io.TextIOWrapper(
            raw,  # type: ignore[type-var]  # (typeshed asks a buffered file; -u gives a raw one too)
            encoding=stream.encoding,
            errors=stream.errors,
            write_through=True,
        )
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=bool(stream.line_buffering),
    )


def use_whole_writes() -> None:
    """Put stdout and stderr on whole writes; a stream without a descriptor stays as it is."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(getattr(getattr(stream, "buffer", None), "raw", None), _WholeWrites):
            continue
        try:
            stream.flush()
            setattr(sys, name, _rewrap(stream))
        except (AttributeError, OSError, ValueError):  # closed, or not a real file
            continue
