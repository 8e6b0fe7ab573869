"""``python -m benchmarks [--quick] [--only NAME ...] [--runs N]``: run, then rewrite RESULTS.md.

Run it from the repository root with the project installed (``pip install -e .``).

- ``--quick``: tiny sizes and one run, the smoke mode the tests use; prints the report and
  never touches ``RESULTS.md``.
- ``--only NAME``: run only these benchmarks; the other sections of ``RESULTS.md`` are kept.
- ``--runs N``: repetitions per figure (default 5; the median, min and max are reported).

A benchmark is one function ``fn(ctx: Context) -> Section``; add it to ``BENCHMARKS`` as
``"module:function"`` (imported only when selected, so one broken module does not stop the
others from running).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._suite import (
    Context,
    Section,
    existing_sections,
    kept_notes,
    measured_code,
    render_results,
    render_section,
)

#: name -> "module:function", in report order (the row numbers in the titles).
BENCHMARKS: dict[str, str] = {
    "fanout": "benchmarks.engine:fanout",
    "chain": "benchmarks.engine:chain",
    "sequential": "benchmarks.engine:sequential",
    "intake": "benchmarks.daemon:intake",
    "burst": "benchmarks.daemon:burst",
    "memory": "benchmarks.engine:memory",
    "http": "benchmarks.http:http",
    "csv_pipeline": "benchmarks.csv_pipeline:csv_pipeline",
    "idle": "benchmarks.daemon:idle",
    "validate": "benchmarks.daemon:validate",
    "api_submit": "benchmarks.api:api_submit",
    "api_reads": "benchmarks.api:api_reads",
    "engine_http": "benchmarks.engine_http:engine_http",
    "schedule_slots": "benchmarks.schedules:schedule_slots",
    "schedule_idle": "benchmarks.schedules:schedule_idle",
    "remote": "benchmarks.cluster:remote",
    "cpu_cluster": "benchmarks.cluster_cpu:cpu_cluster",
    "e2e_fanout": "benchmarks.endtoend:e2e_fanout",
    "e2e_chain": "benchmarks.endtoend:e2e_chain",
    "e2e_daemon": "benchmarks.endtoend_daemon:e2e_daemon",
    "e2e_http": "benchmarks.endtoend:e2e_http",
    "e2e_burst": "benchmarks.endtoend_daemon:e2e_burst",
}

#: Sections written by their own long-running entry points (``python -m benchmarks.soak``),
#: never run by this command; their sections in RESULTS.md are kept, after the others.
KEPT: tuple[str, ...] = ("soak",)

RESULTS = Path(__file__).with_name("RESULTS.md")


def _load(name: str) -> Any:
    module, _, function = BENCHMARKS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def rewrite(results: Path, rendered: dict[str, str], command: str, date: str) -> None:
    """Put ``rendered`` sections into ``results``; every other section and the notes stay."""
    old = results.read_text(encoding="utf-8") if results.exists() else ""
    sections = {**existing_sections(old), **rendered}
    results.write_text(
        render_results([*BENCHMARKS, *KEPT], sections, command, date, kept_notes(old)),
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no RESULTS.md")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 5)")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    if runs < 1:
        parser.error("--runs must be at least 1")
    names = args.only or list(BENCHMARKS)
    command = "python -m benchmarks" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    code = measured_code()

    rendered: dict[str, str] = {}
    failed = []
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"wfe-bench-{name}-") as tmp:
            try:
                section: Section = _load(name)(Context(quick=args.quick, runs=runs, tmp=Path(tmp)))
            except Exception as exc:  # report, go on with the others, exit 1 at the end
                import traceback

                traceback.print_exc()
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
        rendered[name] = render_section(section, command, date, code)
        print(f"[{name}] done in {time.perf_counter() - started:.1f}s", flush=True)
        print(rendered[name], flush=True)

    if not args.quick:
        rewrite(RESULTS, rendered, command, date)
        print(f"wrote {RESULTS}", flush=True)
    for failure in failed:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
