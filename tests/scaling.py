"""Complexity bounds for tests: how CPU time grows with the input, never seconds.

A test must not say "this takes under a second": on a busy machine it fails, on a fast one
it proves nothing. What a test can say is how the cost grows: ``growth(make, n)`` is the CPU
time of the work for size ``8n`` over that for size ``n``, about 8 for linear work and 64 for
quadratic, whatever the machine's speed or load: ``assert growth(...) <= LINEAR``. Speed
itself belongs in ``benchmarks/``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FACTOR = 8
"""``growth`` compares the work for ``n`` with the work for ``FACTOR * n``."""

LINEAR = 24.0
"""The most ``growth`` may be for work meant to be linear: eight times the size then takes
about 8 times the CPU time (n log n a little more) and quadratic work 64. At a load of 10
on two cores, linear work measured 8 to 16 and quadratic work 75 to 85."""

_MIN_SAMPLE_S = 0.01  # shorter samples are mostly clock and cache noise


def _sample(work: Callable[[], object], loops: int) -> float:
    """CPU time (``time.process_time``) of ``loops`` calls of ``work``."""
    started = time.process_time()
    for _ in range(loops):
        work()
    return time.process_time() - started


def growth(make: Callable[[int], Callable[[], object]], n: int, repeats: int = 5) -> float:
    """CPU time of the work for ``FACTOR * n`` over that for ``n``: about ``FACTOR`` for
    linear work, ``FACTOR ** 2`` for quadratic, on any machine under any load.

    ``make(size)`` builds the input outside the timing and returns the work to time. The
    two sizes are timed in turn ``repeats`` times and each keeps its least time (the sample
    the machine disturbed least). Work too quick to time well is repeated enough times,
    the same count for both sizes. The collector is off meanwhile, so a collection that
    other objects happen to trigger is not charged to one size.
    """
    small, large = make(n), make(FACTOR * n)
    gc.collect()
    gc.disable()
    try:
        loops = 1  # the first samples also warm what later calls find warm
        while _sample(small, loops) < _MIN_SAMPLE_S and loops < 1 << 16:
            loops *= 2
        least_small = least_large = float("inf")
        for _ in range(repeats):
            least_small = min(least_small, _sample(small, loops))
            least_large = min(least_large, _sample(large, loops))
    finally:
        gc.enable()
    return least_large / least_small
