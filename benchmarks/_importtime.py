"""``python -X importtime``: every module a command imports, with the time each took.

Used by the benchmarks (the slowest imports of ``validate``; the check that a local daemon
imports nothing of Dask) and by the test of that check.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Import:
    """One module's line: its own and its cumulative import time (µs), and its name."""

    self_us: int
    cumulative_us: int
    name: str


@dataclass(frozen=True, slots=True)
class ImportTimes:
    """One ``python -X importtime ARGV...``: its exit status, its stderr, its imports in order."""

    returncode: int
    stderr: str
    imports: list[Import]

    @property
    def modules(self) -> list[str]:
        """The name of every module imported, in order."""
        return [row.name for row in self.imports]


def import_times(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> ImportTimes:
    """Run ``python -X importtime ARGV...`` (``argv`` after ``python``) in ``cwd``; what it
    imported, from its stderr."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue  # the command's own output, or the header line
        own, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append(Import(int(own), int(cumulative), name.strip()))
    return ImportTimes(done.returncode, done.stderr, rows)
