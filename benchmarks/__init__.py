"""wfe-daemon's benchmark suite: ``python -m benchmarks`` rewrites ``benchmarks/RESULTS.md``.

Each benchmark is one function ``fn(ctx: Context) -> Section`` listed in the registry of
``benchmarks/__main__.py``; :mod:`benchmarks._suite` holds what they share (timing, the
figure and section types, the Markdown writer). Nothing here is a timed assertion: the
test suite only runs ``python -m benchmarks --quick`` to keep the code from rotting.
"""

from __future__ import annotations
