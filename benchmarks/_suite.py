"""What every benchmark shares: the run context, figures, sections and the Markdown report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LIBRARIES = (
    "anyio",
    "uvloop",
    "aiosqlite",
    "httpx",
    "aiohttp",
    "structlog",
    "watchfiles",
    "jsonschema",
    "orjson",
    "pyarrow",
    "adbc-driver-sqlite",
)


@dataclass(slots=True)
class Context:
    """What a benchmark function gets: sizes mode, repetitions and a scratch folder."""

    quick: bool
    runs: int
    tmp: Path
    """A fresh temporary folder, removed after the suite."""

    def size(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` in smoke mode."""
        return quick if self.quick else full

    def progress(self, message: str) -> None:
        print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Figure:
    """One measured quantity: its samples (one per run) and, optionally, a target.

    ``limit`` is an upper bound on the median (``lower_is_better``) or a lower bound.
    """

    label: str
    samples: list[float]
    unit: str
    limit: float | None = None
    lower_is_better: bool = True
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def target(self) -> str:
        if self.limit is None:
            return "-"
        return f"{'≤' if self.lower_is_better else '≥'} {_num(self.limit)} {self.unit}"

    @property
    def met(self) -> str:
        if self.limit is None:
            return "-"
        ok = self.median <= self.limit if self.lower_is_better else self.median >= self.limit
        return "**yes**" if ok else "**NO**"


@dataclass(slots=True)
class Section:
    """The report of one benchmark: a table of figures plus free notes."""

    name: str
    title: str
    what: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


def proc_status_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (0 where there is no /proc).

    Peak RSS is ``VmHWM``, not ``getrusage().ru_maxrss``: Linux carries ``ru_maxrss`` over
    ``execve``, so a child started by a large parent reports at least the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Per-run ratios of paired samples (run i over run i)."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


def per_node_us(seconds: Sequence[float], nodes: int) -> list[float]:
    return [s / nodes * 1e6 for s in seconds]


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_section(section: Section, command: str, date: str, code: str) -> str:
    """One section of RESULTS.md; ``code`` names what was measured (see ``measured_code``).

    Every section carries its own date, code and command: ``--only`` reruns some sections
    and keeps the others, so one file holds sections measured on different commits.
    """
    lines = [
        f"## {section.title}",
        "",
        section.what,
        "",
        f"Measured {date} on {code} by `{command}`.",
        "",
        "| figure | median | min | max | runs | target | met |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for f in section.figures:
        unit = f" {f.unit}" if f.unit else ""
        label = f.label + (f" ({f.note})" if f.note else "")
        lines.append(
            f"| {label} | {_num(f.median)}{unit} | {_num(min(f.samples))} | "
            f"{_num(max(f.samples))} | {len(f.samples)} | {f.target} | {f.met} |"
        )
    if section.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in section.notes)
    return "\n".join(lines) + "\n"


def machine() -> str:
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    try:
        sqlite = __import__("sqlite3").sqlite_version
    except ImportError:  # pragma: no cover
        sqlite = "?"
    cpu = _cpu_model()
    return "\n".join(
        [
            f"- cores: {os.cpu_count()}" + (f" ({cpu})" if cpu else ""),
            f"- Python {platform.python_version()} ({platform.python_implementation()}),"
            f" SQLite {sqlite}",
            f"- platform: {platform.platform()}",
            f"- libraries: {', '.join(versions)}",
        ]
    )


def measured_code() -> str:
    """Which wfe_daemon is measured: ``commit abc1234``, with ``+ uncommitted changes in
    src/`` when the work tree differs, or its folder when it is not this repository's.

    Read before the benchmarks start: a commit made while they run is not what they ran.
    """
    import subprocess

    try:
        import wfe_daemon

        where = str(Path(wfe_daemon.__file__).parent)
    except ImportError:
        return "no importable wfe_daemon"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"`{where}`"
    if not commit:
        return f"`{where}` (no git commit found)"
    if not Path(where).is_relative_to(root):
        return f"`{where}` (outside this repository, whose HEAD is {commit})"
    state = " + uncommitted changes in src/" if dirty else ""
    return f"commit {commit}{state}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# -- RESULTS.md: generated sections between markers, hand-written notes kept ---------------

NOTES_MARKER = "<!-- hand-written notes below: kept when the suite rewrites this file -->"


def _begin(name: str) -> str:
    return f"<!-- bench:{name} -->"


def _end(name: str) -> str:
    return f"<!-- /bench:{name} -->"


def existing_sections(text: str) -> dict[str, str]:
    """Generated sections already in RESULTS.md, by benchmark name (kept under ``--only``)."""
    found: dict[str, str] = {}
    rest = text.split(NOTES_MARKER, 1)[0]
    while True:
        start = rest.find("<!-- bench:")
        if start < 0:
            return found
        name = rest[start + len("<!-- bench:") : rest.index(" -->", start)]
        stop = rest.find(_end(name), start)
        if stop < 0:
            return found
        found[name] = rest[start + len(_begin(name)) : stop].strip("\n") + "\n"
        rest = rest[stop + len(_end(name)) :]


def render_results(
    order: Sequence[str], sections: dict[str, str], command: str, date: str, notes: str
) -> str:
    parts = [
        "# wfe-daemon benchmark results",
        "",
        "Generated by `python -m benchmarks` (see `benchmarks/__main__.py`); do not edit the",
        "generated sections by hand. Every figure is the median of the runs shown, with min and",
        "max; baselines are measured in the same process and the same run. `--only` reruns",
        "some sections and keeps the others, so each section names its own date, commit and",
        "command: sections can have measured different code.",
        "",
        f"Last written by `{command}` on {date}.",
        "",
        "## Machine (of the last run)",
        "",
        machine(),
        "",
    ]
    for name in order:
        if name in sections:
            parts += [_begin(name), sections[name].rstrip("\n"), _end(name), ""]
    parts += [NOTES_MARKER, notes.strip("\n"), ""]
    return "\n".join(parts)


def kept_notes(text: str) -> str:
    return text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in text else ""
