"""``python -m benchmarks._soak_probe OUT INTERVAL [--trim] -- ARGS``: the daemon, looked into.

Runs the CLI's ``main(ARGS)`` in this process with one extra thread that appends a JSON
line to ``OUT`` every ``INTERVAL`` seconds with what ``/proc`` cannot tell apart:

- ``py_blocks``: ``sys.getallocatedblocks()``, the Python objects' allocator (pymalloc) in use;
- ``malloc_used`` / ``malloc_free`` / ``malloc_mmap``: glibc's ``mallinfo2()`` summed over all
  arenas (bytes handed out, bytes free inside the arenas, bytes in malloc's own mmaps);
- ``arenas``: how many malloc arenas exist (one per thread that ever allocated, up to
  ``MALLOC_ARENA_MAX``), counted from ``malloc_info``;
- ``sqlite_used`` / ``sqlite_peak``: ``sqlite3_status64(SQLITE_STATUS_MEMORY_USED)`` of the
  SQLite library the ``sqlite3`` module uses (page caches, statements, schema, lookaside);
- with ``--trim``, ``malloc_trim(0)`` runs after each sample (does RSS come back?);
- with ``--tracemalloc``, ``py_traced`` (every Python allocation, large ones too) and, in
  ``OUT.growth.txt``, the 25 call sites whose memory grew most since the tenth sample.

Only the soak uses it (``python -m benchmarks.soak --probe``); the extra thread wakes once
per interval.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

_SQLITE_STATUS_MEMORY_USED = 0


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def _sqlite() -> ctypes.CDLL | None:
    import sqlite3  # noqa: F401 - load the library the daemon uses before looking it up

    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libsqlite3" in line:
            return ctypes.CDLL(line.split()[-1])
    return None


def _arenas(libc: ctypes.CDLL) -> int:
    """The number of malloc arenas, from ``malloc_info``'s XML (written to a temporary file)."""
    libc.fdopen.restype = ctypes.c_void_p
    with tempfile.TemporaryFile() as tmp:
        stream = libc.fdopen(os.dup(tmp.fileno()), b"w")
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        tmp.seek(0)
        return len(re.findall(rb"<heap nr=", tmp.read()))


def sample(libc: ctypes.CDLL, sqlite: ctypes.CDLL | None) -> dict[str, Any]:
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    row: dict[str, Any] = {
        "t": time.time(),
        "py_blocks": sys.getallocatedblocks(),
        "malloc_used": info.uordblks,
        "malloc_free": info.fordblks,
        "malloc_mmap": info.hblkhd,
        "arenas": _arenas(libc),
    }
    if sqlite is not None:
        current, peak = ctypes.c_int64(), ctypes.c_int64()
        sqlite.sqlite3_status64(
            _SQLITE_STATUS_MEMORY_USED, ctypes.byref(current), ctypes.byref(peak), 0
        )
        row["sqlite_used"], row["sqlite_peak"] = current.value, peak.value
    return row


#: The probe's own allocations (the snapshots, their tracebacks' source lines) are not the
#: daemon's.
_NOT_THE_DAEMON = [
    tracemalloc.Filter(False, name, all_frames=True) for name in (__file__, tracemalloc.__file__)
]


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_NOT_THE_DAEMON)


def _growth(out: Path, base: tracemalloc.Snapshot) -> None:
    stats = _snapshot().compare_to(base, "traceback")[:25]
    lines = []
    for stat in stats:
        lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
        lines.extend("    " + line for line in stat.traceback.format()[-16:])
    out.with_name(out.name + ".growth.txt").write_text("\n".join(lines) + "\n")


def _sampler(out: Path, interval: float, trim: bool) -> None:
    libc, sqlite = _libc(), _sqlite()
    base: tracemalloc.Snapshot | None = None
    with out.open("a", encoding="utf-8") as file:
        for n in itertools.count():
            row = sample(libc, sqlite)
            if tracemalloc.is_tracing():
                row["py_traced"] = tracemalloc.get_traced_memory()[0]
                if n == 10:
                    base = _snapshot()
                elif base is not None and n % 10 == 0:
                    _growth(out, base)
            file.write(json.dumps(row) + "\n")
            file.flush()
            if trim:
                libc.malloc_trim(0)
            time.sleep(interval)


def main(argv: list[str]) -> int:
    out, interval, *rest = argv
    trim = "--trim" in rest
    if "--tracemalloc" in rest:
        tracemalloc.start(8)
    args = rest[rest.index("--") + 1 :]
    threading.Thread(
        target=_sampler, args=(Path(out), float(interval), trim), name="soak-probe", daemon=True
    ).start()
    from wfe_daemon.cli.commands import main as daemon_main

    return daemon_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
