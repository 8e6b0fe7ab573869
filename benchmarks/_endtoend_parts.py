"""Where ``wfe-daemon execute`` spends its time (rows E1 and E2), and the daemon's logs split.

:func:`execute_parts` calls, in this process, the functions ``execute`` calls on the way
from a file to its printed summary (``cli/commands.py`` ``_execute``, ``_with_engine``,
``_print_summary``; ``service/submission.py`` ``submit``), each timed with
``perf_counter``; :func:`profile_top` runs the real command under cProfile;
:func:`log_times` reads the daemon's ``workflow.*`` log lines back for the coarse split of
rows E3 and E5.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import io
import json
import os
import pstats
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.daemon import DaemonRun
from benchmarks.engine import _log_to_devnull
from wfe_daemon.runtime.eventloop import run as run_on_loop

PARTS = {
    "read": "reading the file + `load_json`",
    "parse": "validation (`parse_workflow`)",
    "definition": "`public_definition`",
    "create": "run creation (`Store.create_run`)",
    "engine": "the engine (`Engine.run` minus run creation and summary)",
    "summary": "building the summary (`build_summary`)",
    "print": "printing it (`_print_summary`)",
    "mask": "of which masking (`MASKER.value`)",
    "dumps": "of which encoding (`pretty_json`)",
}
"""The parts of a run measured in-process, by key; "of which" parts are inside ``print``."""


# -- a pipe drained by a thread ---------------------------------------------------------------


class Drain(threading.Thread):
    """Reads a pipe until EOF, keeping what it read: a read end's descriptor, or a FIFO's
    path (opened in the thread: that waits for the writer to open its end)."""

    def __init__(self, source: int | Path) -> None:
        super().__init__(name=f"drain-{source}", daemon=True)
        self.source = source
        self.chunks: list[bytes] = []

    def run(self) -> None:
        fd = self.source if isinstance(self.source, int) else os.open(self.source, os.O_RDONLY)
        try:
            while chunk := os.read(fd, 1 << 16):
                self.chunks.append(chunk)
        finally:
            os.close(fd)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


@contextlib.contextmanager
def stdout_to_pipe() -> Iterator[Drain]:
    """``sys.stdout`` is a pipe that a thread drains, as the benchmark drains ``execute``'s."""
    read_fd, write_fd = os.pipe()
    drain = Drain(read_fd)
    drain.start()
    stream = io.TextIOWrapper(open(write_fd, "wb"), encoding="utf-8")  # noqa: SIM115
    try:
        with contextlib.redirect_stdout(stream):
            yield drain
    finally:
        stream.close()
        drain.join(30)


# -- rows E1 and E2: the parts of execute, in-process -------------------------------------------


@contextlib.contextmanager
def _timing(owner: Any, name: str, seconds: dict[str, float], key: str) -> Iterator[None]:
    """Time every call of ``owner.name`` (sync or async) into ``seconds[key]`` while open."""
    original = getattr(owner, name)

    if inspect.iscoroutinefunction(original):

        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed_async)
    else:

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _settings(root: Path) -> Any:
    """The settings ``execute`` reads in ``root``: defaults, the folders of :class:`DaemonRun`."""
    from wfe_daemon.config import Settings

    run = DaemonRun(root)
    return Settings(db_path=run.db_path, data_dir=run.data_dir, inbox=run.inbox, outbox=run.outbox)


def _fresh(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def execute_parts(path: Path, root: Path, nodes: int) -> dict[str, float]:
    """Seconds of each part of ``execute`` on ``path`` (see :data:`PARTS`), logs at WARNING.

    A fresh database; the engine as ``_with_engine`` builds it (``open_engine``).
    """
    import wfe_daemon.runtime.engine as engine_module
    from wfe_daemon.cli.commands import _print_summary, _read
    from wfe_daemon.core.masking import MASKER
    from wfe_daemon.core.model import parse_workflow, public_definition
    from wfe_daemon.core.strictjson import load_json
    from wfe_daemon.service.outbox import pretty_json
    from wfe_daemon.service.wiring import load_registry, open_engine
    from wfe_daemon.store.database import Store

    settings = _settings(root)
    _fresh(settings.db_path)
    _log_to_devnull("WARNING")
    registry = load_registry(settings)
    seconds: dict[str, float] = {}
    gc.collect()

    def part(key: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        seconds[key] = time.perf_counter() - started
        return value

    def read() -> tuple[bytes, Any]:
        data = _read(path, settings.max_file_size)
        return data, load_json(data)

    data, doc = part("read", read)
    workflow = part("parse", lambda: parse_workflow(doc, registry))
    definition = part("definition", lambda: public_definition(data.decode("utf-8-sig"), doc))

    async def run() -> Any:
        async with (
            Store.open(settings.db_path) as store,
            open_engine(settings, registry, store) as engine,
        ):
            started = time.perf_counter()
            summary = await engine.run(
                workflow, source=path.name, source_path=str(path), definition=definition
            )
            seconds["run"] = time.perf_counter() - started
            store.mark_settled(summary["run_id"])
            return summary

    with (
        _timing(Store, "create_run", seconds, "create"),
        _timing(engine_module, "build_summary", seconds, "summary"),
    ):
        summary = run_on_loop(run())
    _fresh(settings.db_path)
    if summary["status"] != "SUCCESS" or len(summary["nodes"]) != nodes:
        raise RuntimeError(f"in-process run ended {summary['status']}")
    seconds["engine"] = seconds.pop("run") - seconds["create"] - seconds["summary"]
    with stdout_to_pipe():
        part("print", lambda: _print_summary(summary))
    masked = part("mask", lambda: MASKER.value(summary))
    part("dumps", lambda: pretty_json(masked))
    return seconds


# -- row E1: a cProfile top list of the whole command ------------------------------------------


def profile_top(
    path: Path, env: dict[str, str], cwd: Path, out: Path, top: int = 15
) -> tuple[list[str], float]:
    """``python -m cProfile -m wfe_daemon execute FILE``: the ``top`` functions by tottime
    (main thread only), and the total seconds the profile saw."""
    command = ["-m", "cProfile", "-o", str(out), "-m", "wfe_daemon", "execute", str(path)]
    done = subprocess.run(
        [sys.executable, *command],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"profiled execute exited {done.returncode}: {done.stderr[-2000:]!r}")
    stats = pstats.Stats(str(out), stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)
    lines = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _callers) in rows[:top]:
        where = name if file == "~" else f"{Path(file).name}:{line} {name}"
        lines.append(f"`{where}` {tottime * 1000:.0f} ms ({calls:,} calls, cum {cumtime:.2f} s)")
    return lines, float(stats.total_tt)


# -- rows E3 and E5: the daemon's own log lines ---------------------------------------------------

EVENTS = ("workflow.received", "workflow.started", "workflow.finished")


def log_times(text: str) -> dict[str, dict[str, float]]:
    """By source file name: the wall-clock time (epoch seconds) of each ``workflow.*`` event."""
    found: dict[str, dict[str, float]] = {}
    sources: dict[int, str] = {}
    for line in text.splitlines():
        if '"workflow.' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event = entry.get("event")
        if event not in EVENTS:
            continue
        at = datetime.fromisoformat(entry["timestamp"]).timestamp()
        source = entry.get("source") or sources.get(entry.get("run_id", -1))
        if source is None:
            continue
        if event == "workflow.started":
            sources[entry["run_id"]] = source
        found.setdefault(source, {})[event] = at
    return found


def wall_offset() -> float:
    """``time.time() - time.perf_counter()``: turns a ``perf_counter`` time into epoch seconds."""
    return time.time() - time.perf_counter()
