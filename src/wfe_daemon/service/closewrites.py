"""Which files of a folder some process is still writing, from inotify (Linux).

The inbox takes a file that parses at once. One that does not parse may be half-written, so
the intake waits until it has not changed for a while (``quiet_s``). That alone would
reject a file whose writer pauses longer than that. inotify also says when a writer
closes the file: a name is *being written* from its creation or a write until the kernel
reports it closed after writing (``IN_CLOSE_WRITE``, sent too when the writer dies). A
file renamed in arrives complete. The watcher's own library (watchfiles) does not report
closes, so this reads a second inotify descriptor, without blocking, at every pass of
the intake (:meth:`WriteWatch.update`), so its queue never overflows.

Where inotify is missing, or its queue overflowed, nothing is known to be written and the
quiet time alone decides, as before. A name with no write for ``HOLD_MAX_S`` stops
counting as written (a file hard-linked in is created without ever being closed).

The binding is this module's own, about fifteen lines of ``ctypes`` and ``struct``, because
the maintained ones are the same binding and do no better. ``inotify-simple`` 2.0.1 and
``asyncinotify`` 4.4.4 both call libc through ``ctypes`` and parse the same records, and
behave as this module on the cases its tests cover (close after write, a rename in, a
queue overflow, a name that is not UTF-8, a folder deleted and made again, a missing
folder). Measured in a process with the daemon's modules loaded (2 shared cores, medians;
events: 1,500 files made and closed per read, 4,500 events, 15 rounds):

    binding          import      idle RSS   events/s   types
    this module      1.3 ms      8 KiB      430,000    yes
    inotify-simple   2.6 ms      56 KiB     285,000    none (no ``py.typed``)
    asyncinotify     10-17 ms    44 KiB     67,000     yes (an object per event)

``asyncinotify`` is built for an asyncio reader; its synchronous path goes through a
selector, and it runs ``ldconfig`` at import. ``inotify-simple`` is the closest, and
would replace the two short blocks below by an untyped dependency that parses more
slowly, on the event loop.
"""

from __future__ import annotations

import ctypes
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
            # The C library is already loaded: find_library("c") would run ldconfig in a
            # subprocess, from the event loop, at each arming of the inbox (2 to 7 ms).
            libc = ctypes.CDLL(None, use_errno=True)
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
                    self.close()  # unusable: the quiet time decides from now on
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
