"""Wall-clock stamps: UTC ISO-8601 with microseconds, cheap enough for every event."""

from __future__ import annotations

import time

_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current UTC time, e.g. ``2026-11-25T10:00:00.000123+00:00``.

    The same text as ``datetime.now(UTC).isoformat()``, in about a third of the time: the
    date and time of day are formatted once per second (it runs several times per node).
    """
    global _second
    now = time.time()
    second = int(now)
    cached_second, prefix = _second
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, prefix)
    return f"{prefix}.{int((now - second) * 1_000_000):06d}+00:00"
