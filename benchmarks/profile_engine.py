"""Where the engine's time goes: ablations of the 10k fan-out (and chain), for RESULTS.md.

``python -m benchmarks.profile_engine [--runs N] [--shape fanout|chain]`` measures the
engine (persistence on, logs INFO to /dev/null) as it is, then again with one component
stubbed out at a time by monkeypatching this process only (nothing is changed on disk).
The difference is what that component costs per node, scheduling effects included.
A "what if" tool for choosing optimisations: it reaches into internals
(``wfe_daemon.runtime.engine.redact``, ``Store.node_finished``, ...) and may need updating when
they move. Not part of the suite's registry; the suite must not depend on it.

``--logs`` adds a micro-benchmark of one ``node.finished`` log event through the
configured structlog chain, with each processor removed in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import engine as bench

Patch = Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _setattrs(*triples: tuple[Any, str, Any]) -> Iterator[None]:
    old = [(obj, name, getattr(obj, name)) for obj, name, _ in triples]
    for obj, name, value in triples:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in reversed(old):
            setattr(obj, name, value)


def _no_node_writes() -> contextlib.AbstractContextManager[None]:
    from wfe_daemon.store.database import Store

    return _setattrs(
        (Store, "node_running", lambda *a, **k: None),
        (Store, "node_finished", lambda *a, **k: None),
    )


def _no_redact() -> contextlib.AbstractContextManager[None]:
    import wfe_daemon.runtime.engine as engine

    return _setattrs((engine, "redact", lambda value: value))


def _no_output_check() -> contextlib.AbstractContextManager[None]:
    import wfe_daemon.runtime.engine as engine

    return _setattrs((engine, "encode_output", lambda value: b"{}"))


def _fixed_clock() -> contextlib.AbstractContextManager[None]:
    import wfe_daemon.runtime.engine as engine

    return _setattrs((engine, "now_iso", lambda: "2026-01-01T00:00:00.000000+00:00"))


def _cached_secret_keys() -> contextlib.AbstractContextManager[None]:
    import wfe_daemon.core.model as model
    import wfe_daemon.logs as logs

    cached = functools.lru_cache(maxsize=4096)(model.is_secret_key)
    return _setattrs((model, "is_secret_key", cached), (logs, "is_secret_key", cached))


def _no_timeout_scope() -> contextlib.AbstractContextManager[None]:
    from wfe_daemon.runtime.deadlines import Deadlines

    return _setattrs((Deadlines, "scope", lambda _self, _seconds: _NullScope()))


class _NullScope:
    expired = False

    def __enter__(self) -> _NullScope:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextlib.contextmanager
def _all(*patches: Patch) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch())
        yield


ABLATIONS: dict[str, tuple[str, Patch | None]] = {
    "as is (INFO)": ("INFO", None),
    "logs at WARNING": ("WARNING", None),
    "no node writes to the store (node_running/node_finished no-ops)": ("INFO", _no_node_writes),
    "redact() = identity (outputs, summary, definition)": ("INFO", _no_redact),
    "no output encoding (engine.encode_output)": ("INFO", _no_output_check),
    "now_iso() constant": ("INFO", _fixed_clock),
    "is_secret_key cached (lru_cache)": ("INFO", _cached_secret_keys),
    "no timeout scope per attempt (Deadlines.scope)": ("INFO", _no_timeout_scope),
    "all of the above, logs WARNING": (
        "WARNING",
        lambda: _all(
            _no_node_writes,
            _no_redact,
            _no_output_check,
            _fixed_clock,
            _cached_secret_keys,
            _no_timeout_scope,
        ),
    ),
}


def ablations(shape: str, runs: int, n: int = 10_000) -> list[tuple[str, float, float]]:
    registry = bench._registry()
    doc = bench.fanout_doc(n) if shape == "fanout" else bench.chain_doc(n)
    parsed, workflow = bench.parse(bench.encode(doc), registry)
    samples: dict[str, list[float]] = {name: [] for name in ABLATIONS}
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "p.db"
        for _ in range(runs):
            for name, (level, patch) in ABLATIONS.items():
                with patch() if patch else contextlib.nullcontext():
                    seconds = bench.engine_seconds(workflow, parsed, registry, db, level)
                samples[name].append(seconds / n * 1e6)
            bare.append(bench._timed(bench.bare_scheduler(workflow, registry)) / n * 1e6)
    base = statistics.median(samples["as is (INFO)"])
    rows = [
        (name, statistics.median(v), base - statistics.median(v)) for name, v in samples.items()
    ]
    rows.append(("bare asyncio scheduler", statistics.median(bare), base - statistics.median(bare)))
    return rows


def log_events(count: int = 20_000) -> list[tuple[str, float]]:
    """µs per ``node.finished`` event through the configured chain, each processor removed."""
    import structlog
    from structlog.contextvars import bind_contextvars, clear_contextvars

    from wfe_daemon.logs import configure_logging

    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    configure_logging("INFO", devnull)
    processors = list(structlog.get_config()["processors"])
    bind_contextvars(run_id=1, workflow="fan-out 10000", node_id="n42", task_type="echo")
    rows = []

    def measure(label: str, procs: list[Any], factory: Any = None) -> None:
        structlog.configure(
            processors=procs, logger_factory=factory or structlog.WriteLoggerFactory(devnull)
        )
        log = structlog.get_logger().bind(run_id=1, workflow="fan-out 10000")
        best = []
        for _ in range(5):
            started = time.perf_counter()
            for i in range(count):
                log.info(
                    "node.finished",
                    node_id=f"n{i}",
                    task_type="echo",
                    status="SUCCESS",
                    duration=0.000123,
                    attempt=1,
                    error=None,
                )
            best.append((time.perf_counter() - started) / count * 1e6)
        rows.append((label, min(best)))

    measure("the configured chain", processors)
    for proc in processors[:-1]:
        name = getattr(proc, "__name__", type(proc).__name__)
        measure(f"without {name}", [p for p in processors if p is not proc])

    class NoFlush:
        def __init__(self, *_: Any) -> None:
            self.write = devnull.write

        def msg(self, message: str) -> None:
            self.write(message + "\n")

        info = msg

    measure("write without flush per line", processors, lambda *_: NoFlush())
    measure(
        "processors only (logger discards)",
        [*processors[:-1], lambda *_: ""],
        lambda *_: type("Null", (), {"msg": lambda self, m: None, "info": lambda self, m: None})(),
    )
    clear_contextvars()
    configure_logging("INFO", devnull)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_engine")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shape", choices=["fanout", "chain"], default="fanout")
    parser.add_argument("--logs", action="store_true", help="also the per-event log costs")
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes in the workflow")
    args = parser.parse_args()
    print(f"| {args.nodes:,} {args.shape}: engine with | µs/node (median of {args.runs}) | saves |")
    print("| --- | ---: | ---: |")
    for name, us, saved in ablations(args.shape, args.runs, args.nodes):
        print(f"| {name} | {us:.1f} | {saved:+.1f} |")
    if args.logs:
        print("\n| one node.finished event | µs |\n| --- | ---: |")
        for name, us in log_events():
            print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
