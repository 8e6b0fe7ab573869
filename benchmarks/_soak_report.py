"""The soak's report: the samples as a Markdown table, slopes per third and a verdict."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from benchmarks._suite import measured_code
from benchmarks.daemon import loadavg

TABLE_ROWS = 13  # rows of the report's table, evenly spread over the samples


def slope_kb_per_1000(rows: list[dict[str, Any]], key: str = "VmRSS") -> float:
    """Least-squares slope of ``key`` (kB) against finished workflows, in kB per 1,000."""
    xs = [float(r["done"]) for r in rows]
    ys = [float(r[key]) for r in rows]
    if len(rows) < 2 or max(xs) == min(xs):
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx * 1000


def thirds(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The samples of the first and of the last third of the run (by time, the feeding part)."""
    fed = [r for r in rows if r["dropped"] > 0] or rows
    end = fed[-1]["s"]
    return ([r for r in fed if r["s"] <= end / 3], [r for r in fed if r["s"] >= end * 2 / 3])


_MB = 1024.0
_COLUMNS: list[tuple[str, str, Any]] = [
    ("min", "s", lambda v: f"{v / 60:.1f}"),
    ("workflows done", "done", lambda v: f"{v:,}"),
    ("RSS MB", "VmRSS", lambda v: f"{v / _MB:.1f}"),
    ("anon MB", "RssAnon", lambda v: f"{v / _MB:.1f}"),
    ("file MB", "RssFile", lambda v: f"{v / _MB:.1f}"),
    ("fds", "fds", str),
    ("threads", "Threads", str),
    ("db MB", "db", lambda v: f"{v / 2**20:.1f}"),
    ("WAL MB", "wal", lambda v: f"{v / 2**20:.1f}"),
    ("Python arenas", "py_arenas", str),
    ("Python blocks (k)", "py_blocks", lambda v: f"{v / 1000:.0f}"),
    ("malloc used MB", "malloc_used", lambda v: f"{v / 2**20:.1f}"),
    ("malloc free MB", "malloc_free", lambda v: f"{v / 2**20:.1f}"),
    ("arenas", "arenas", str),
    ("SQLite MB", "sqlite_used", lambda v: f"{v / 2**20:.2f}"),
]


def table(rows: list[dict[str, Any]], count: int = TABLE_ROWS) -> list[str]:
    """A Markdown table of ``count`` samples spread evenly from the first to the last."""
    picked = (
        rows
        if len(rows) <= count
        else [rows[round(i * (len(rows) - 1) / (count - 1))] for i in range(count)]
    )
    columns = [c for c in _COLUMNS if c[1] in rows[-1]]
    lines = [
        "| " + " | ".join(c[0] for c in columns) + " |",
        "| " + " | ".join("---:" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(fmt(r[key]) for _, key, fmt in columns) + " |" for r in picked]
    return lines


#: Below this growth (kB per 1,000 workflows) over the last third the memory has levelled
#: off: the noise of malloc's free lists (RSS wanders by a megabyte or two as they are
#: reused and returned) over a third of an hour-long run at 20 files/s (24,000 workflows).
LEVEL_KB_PER_1000 = 100.0
#: ... and the last third's mean RSS is at most this far above the middle third's: a slope
#: over a third alone missed a rise of 1.5 MB between them (noise tilts a third's line).
LEVEL_STEP_MB = 1.0


def verdict(first: float, last: float, step_mb: float) -> str:
    """ "levels off" when the last third grows far slower than the first, or hardly at all,
    and sits about where the middle third did (``step_mb``: the rise of the mean between them).
    """
    if last <= max(LEVEL_KB_PER_1000, first * 0.25) and step_mb <= LEVEL_STEP_MB:
        return "levels off"
    return "still growing"


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def _inside(first: list[dict[str, Any]], last: list[dict[str, Any]]) -> list[str]:
    """With --probe: how the memory the daemon asked for moved, apart from its free lists."""
    if "malloc_used" not in last[-1]:
        return []
    for row in (*first, *last):  # a block moves between the two as malloc's threshold adapts
        row["malloc_held"] = row["malloc_used"] + row.get("malloc_mmap", 0)
    parts = []
    for key, label, scale, unit in (
        ("malloc_held", "malloc in use (heap and mmapped)", 1024, "kB"),
        ("sqlite_used", "SQLite's own (in malloc)", 1024, "kB"),
        ("malloc_free", "malloc's free lists", 1024, "kB"),
        ("py_blocks", "Python allocator blocks", 1, "blocks"),
    ):
        a, b = slope_kb_per_1000(first, key) / scale, slope_kb_per_1000(last, key) / scale
        parts.append(f"{label} {a:+.0f} → {b:+.0f} {unit}")
    arenas = (min(r["arenas"] for r in first), max(r["arenas"] for r in last))
    return [
        f"- Inside the daemon (`--probe`), per 1,000 workflows, first → last third: "
        f"{'; '.join(parts)}. malloc arenas {arenas[0]} at the start, at most "
        f"{arenas[1]} in the last third."
    ]


def report(rows: list[dict[str, Any]], summary: dict[str, Any], command: str, what: str) -> str:
    """The Markdown section: ``what`` the soak does, when and how, the table, the verdict."""
    first, last = thirds(rows)
    middle = [r for r in rows if first[-1]["s"] < r["s"] < last[0]["s"]] or last
    s_first, s_last = slope_kb_per_1000(first), slope_kb_per_1000(last)
    anon_first, anon_last = slope_kb_per_1000(first, "RssAnon"), slope_kb_per_1000(last, "RssAnon")
    means = [_mean(part, "VmRSS") / _MB for part in (first, middle, last)]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Soak: the daemon's memory over a long steady trickle of workflows",
        "",
        what.replace("\n", " ").replace("``", "`").strip(),
        "",
        f"Measured {date} on {measured_code()} by `{command}`.",
        "",
        f"{summary['duration'] / 60:.0f} min at {summary['rate']:g} files/s, samples every "
        f"{rows[1]['s'] - rows[0]['s']:.0f} s.",
        "",
        *table(rows),
        "",
        f"- Slope of RSS per 1,000 workflows: first third **{s_first:+.0f} kB**, last third "
        f"**{s_last:+.0f} kB** (anonymous memory {anon_first:+.0f} → {anon_last:+.0f} kB); "
        f"mean RSS of the first, middle and last third "
        f"{' / '.join(f'{m:.1f}' for m in means)} MB: "
        f"**{verdict(s_first, s_last, means[2] - means[1])}** (levelled: the last third's "
        f"slope under {LEVEL_KB_PER_1000:.0f} kB per 1,000 or a quarter of the first's, and "
        f"its mean at most {LEVEL_STEP_MB:g} MB over the middle third's).",
        *_inside(first, last),
        f"- {summary['dropped']:,} files dropped, {summary['results']:,} results, all "
        f"`SUCCESS`, {summary['runs']:,} distinct runs in the database; none lost or doubled. "
        f"The feeder was at most {summary['late'] * 1000:.0f} ms behind its schedule.",
        f"- Peak RSS (VmHWM) {rows[-1]['VmHWM'] / _MB:.1f} MB. MB = 2^20 bytes. Load average "
        f"(1 min) at the end {loadavg()} on {os.cpu_count()} cores.",
    ]
    return "\n".join(lines) + "\n"
