"""Which files of a folder some process is still writing, from inotify (Linux).

The inbox takes a file that parses at once. One that does not parse may be half-written, so
the intake waits until it has not changed for a while (``settle_s``). That alone would
reject a file whose writer pauses longer than that. inotify also says when a writer
closes the file: a name is *being written* from its creation or a write until the kernel
reports it closed after writing (``IN_CLOSE_WRITE``, sent too when the writer dies). A
file renamed in arrives complete. The watcher's own library (watchfiles) does not report
closes, so this reads a second inotify descriptor, without blocking, at every pass of
the intake (:meth:`WriteWatch.update`), so its queue never overflows.

Where inotify is missing, or its queue overflowed, nothing is known to be written and the
settle time alone decides, as before. A name with no write for ``HOLD_MAX_S`` stops
counting as written (a file hard-linked in is created without ever being closed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import time
from pathlib import Path
from typing import Final

HOLD_MAX_S: Final = 60.0

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
_IN_CREATE, _IN_DELETE, _IN_Q_OVERFLOW, _IN_ISDIR = 0x100, 0x200, 0x4000, 0x40000000
_PRUNE_ABOVE: Final = 256
"""Names kept before those silent for ``HOLD_MAX_S`` are dropped (links never close)."""
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_MASK: Final = (
    _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
)
_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class WriteWatch:
    """The names in one folder being written now (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self._writing: dict[str, float] = {}  # name -> monotonic time of its last write
        self._fd: int | None = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, os.fsencode(folder), _MASK) < 0:
                os.close(fd)
                return
            self._fd = fd
        except (OSError, AttributeError):  # no libc, or no inotify (not Linux)
            self._fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def writing(self, name: str) -> bool:
        """Whether a process has ``name`` open after writing it, as of the last update."""
        last = self._writing.get(name)
        return last is not None and time.monotonic() - last < HOLD_MAX_S

    def update(self) -> None:
        """Read the events queued since the last update (never blocks)."""
        while self._fd is not None:
            try:
                data = os.read(self._fd, 64 * 1024)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.close()  # unusable: the settle time decides from now on
                    self._writing.clear()
                return
            now, offset = time.monotonic(), 0
            while offset + _HEADER.size <= len(data):
                _, mask, _, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
                offset += _HEADER.size + length
                if not mask & _IN_ISDIR:
                    self._apply(mask, os.fsdecode(raw.rstrip(b"\0")), now)
            if len(self._writing) > _PRUNE_ABOVE:
                self._writing = {
                    name: last for name, last in self._writing.items() if now - last < HOLD_MAX_S
                }

    def _apply(self, mask: int, name: str, now: float) -> None:
        if mask & _IN_Q_OVERFLOW:
            self._writing.clear()  # events lost: nothing is known to be written
        elif mask & (_IN_CREATE | _IN_MODIFY):
            self._writing[name] = now
        elif mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_MOVED_FROM | _IN_DELETE):
            self._writing.pop(name, None)
