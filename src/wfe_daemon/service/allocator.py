"""glibc's malloc in a long-running process: a fixed mmap threshold.

glibc serves a block of more than ``M_MMAP_THRESHOLD`` (128 KiB) with a mapping of its own,
returned to the system when the block is freed. By default that threshold adapts: freeing
such a block raises it to the block's size, and the heap's trim threshold to twice that (up
to 32 MiB). In the daemon, one 0.9 MiB block freed a few minutes into a steady stream of
workflows was enough: from then on blocks of that size came from the heap, and its free
lists, which the process keeps, grew with every thousand workflows (``benchmarks/RESULTS.md``,
the soak). Setting the threshold turns the adaptation off (mallopt(3)); at 128 KiB the
daemon's RSS stays level.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def fix_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold at 128 KiB; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
