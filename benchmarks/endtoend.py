"""End-to-end benchmarks (RESULTS.md rows 18-22, E1-E5): the path a user meets, file to result.

- ``e2e_fanout`` (E1) and ``e2e_chain`` (E2): ``python -m wfe_daemon execute FILE``, a whole
  process, on a 10,010-node workflow (the fan-out and the chain of rows 1 and 2) minus the
  same on a 10-node one, per node; logs at INFO (the default) on stderr and the summary on
  stdout, both pipes the benchmark drains (``subprocess.run`` with ``capture_output``), a
  fresh database per run. Interleaved with the baselines: the in-process engine alone
  (``engine_seconds`` of :mod:`benchmarks.engine`), ``python -c pass``, and the same
  command at WARNING (the logs' share). The breakdown calls, in this process, the functions
  ``execute`` calls (:func:`benchmarks._endtoend_parts.execute_parts`); E1 adds a cProfile
  top list of the real command.
- ``e2e_daemon`` (E3, in :mod:`benchmarks.endtoend_daemon`): ``wfe-daemon run``
  (:class:`~benchmarks.daemon.DaemonRun`), its stdout and stderr pipes drained by threads as
  journald would; a 10,000-node fan-out file renamed into the inbox to its result file
  (inotify, :class:`~benchmarks.daemon.OutboxWatch`) minus a 10-node file's time, per node;
  at INFO and, as the baseline, at WARNING.
- ``e2e_http`` (E4): ``execute`` of 1,000 independent ``http_get`` nodes, 100 at once,
  against :mod:`benchmarks.http`'s 50 ms server; the window from the first request the
  server sees to the last answer it sends, over the ideal (10 waves x 50 ms); beside it
  aiohttp alone against the same server (``python -m benchmarks.http client aiohttp-alone``).
- ``e2e_burst`` (E5, in :mod:`benchmarks.endtoend_daemon`): row 5's burst
  (:func:`~benchmarks.daemon.burst_once`) with the daemon at INFO and its output on drained
  pipes; the baseline is the same at WARNING.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._endtoend_parts import (
    PARTS,
    execute_parts,
    log_times,
    profile_top,
    wall_offset,
)
from benchmarks._suite import Context, Figure, Section, per_node_us, ratios
from benchmarks.daemon import (
    DaemonRun,
    _load_note,
    _wall,
    loadavg,
)
from benchmarks.engine import _registry, chain_doc, encode, engine_seconds, fanout_doc, parse

ROOT = Path(__file__).resolve().parent.parent
SMALL = 10  # nodes of the file whose time is subtracted


# -- whole processes ------------------------------------------------------------------------------


def _env(root: Path, level: str, **extra: str) -> dict[str, str]:
    """The daemon's environment on ``root`` at ``level``, writing bytecode where Python
    does by default (an installed package has it; the warm-up writes this checkout's)."""
    env = DaemonRun(root).env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["WFE_LOG_LEVEL"] = level
    env.update(extra)
    return env


def _execute(
    file: Path,
    env: dict[str, str],
    root: Path,
    nodes: int,
    split: dict[str, list[float]] | None = None,
) -> float:
    """Wall seconds of ``python -m wfe_daemon execute FILE`` on a fresh database; checked.

    ``split`` (logs at INFO) gets the process's own phases, read from its log lines:
    ``before`` (start to ``workflow.received``: imports, settings, registry, store),
    ``run`` (to ``workflow.finished``) and ``after`` (to the process's exit).
    """
    db = Path(env["WFE_DB_PATH"])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    offset = wall_offset()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "execute", str(file)],
        env=env,
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,  # both pipes drained as they fill
        check=False,
    )
    seconds = time.perf_counter() - started
    summary = json.loads(done.stdout) if done.returncode == 0 else {}
    if summary.get("status") != "SUCCESS" or len(summary.get("nodes", ())) != nodes:
        raise RuntimeError(f"execute {file.name} exited {done.returncode}: {done.stderr[-2000:]!r}")
    if split is not None:
        times = log_times(done.stderr.decode(errors="replace"))[file.name]
        begin, end = started + offset, started + seconds + offset
        received, finished = times["workflow.received"], times["workflow.finished"]
        for key, value in (
            ("before", received - begin),
            ("run", finished - received),
            ("after", end - finished),
        ):
            split.setdefault(key, []).append(value)
    return seconds


# -- rows E1 and E2 -------------------------------------------------------------------------------


def _parts_figures(section: Section, samples: dict[str, list[float]], whole: list[float]) -> None:
    """The breakdown of the big run, in ms, and how far the parts' sum is from the whole."""

    def ms(values: list[float]) -> list[float]:
        return [v * 1000 for v in values]

    section.add(
        Figure("part: start-up and fixed costs (the 10-node execute)", ms(samples["startup"]), "ms")
    )
    for key, label in PARTS.items():
        section.add(Figure(f"part: {label}", ms(samples[key]), "ms"))
    section.add(
        Figure("part: logs (the big execute at INFO minus at WARNING)", ms(samples["logs"]), "ms")
    )
    counted = ["startup", *(k for k in PARTS if k not in ("mask", "dumps")), "logs"]
    total = [sum(samples[k][i] for k in counted) for i in range(len(whole))]
    section.add(Figure("sum of the parts", ms(total), "ms"))
    section.add(Figure("the whole process (the big file, INFO)", ms(whole), "ms"))
    section.add(Figure("sum of the parts / the whole process", ratios(total, whole), "x"))


def _whole_vs_parts(
    ctx: Context, section: Section, doc: dict[str, Any], small_doc: dict[str, Any], limit: float
) -> Path:
    n, root = len(doc["nodes"]), ctx.tmp / section.name
    big_file, small_file = root / "big.json", root / "small.json"
    info, warn = _env(root, "INFO"), _env(root, "WARNING")
    big_file.write_bytes(encode(doc))
    small_file.write_bytes(encode(small_doc))
    registry = _registry()
    doc_parsed, workflow = parse(encode(doc), registry)
    keys = ("big", "small", "big_warn", "pass", "engine_alone", "startup", "logs", *PARTS)
    s: dict[str, list[float]] = {key: [] for key in keys}
    if not ctx.quick:  # warm-up: the bytecode cache (in smoke mode the first run fills it)
        _execute(small_file, info, root, SMALL)
        _wall([sys.executable, "-c", "pass"], info, root)
    small_split: dict[str, list[float]] = {}
    for run in range(ctx.runs):
        ctx.progress(f"{section.name}: run {run + 1}/{ctx.runs}")
        s["big"].append(_execute(big_file, info, root, n))
        s["small"].append(_execute(small_file, info, root, SMALL, small_split))
        s["big_warn"].append(_execute(big_file, warn, root, n))
        s["pass"].append(_wall([sys.executable, "-c", "pass"], info, root))
        s["engine_alone"].append(
            engine_seconds(workflow, doc_parsed, registry, root / "engine.db", "INFO")
        )
        for key, value in execute_parts(big_file, root, n).items():
            s[key].append(value)
        s["startup"].append(s["small"][-1])
        s["logs"].append(s["big"][-1] - s["big_warn"][-1])
    extra = n - SMALL
    marginal = [(b - m) / extra * 1e6 for b, m in zip(s["big"], s["small"], strict=True)]
    warn_marginal = [(b - m) / extra * 1e6 for b, m in zip(s["big_warn"], s["small"], strict=True)]
    engine = per_node_us(s["engine_alone"], n)
    section.add(
        Figure(
            f"execute, INFO: ({n:,}-node - {SMALL}-node) / {extra:,}", marginal, "µs/node", limit
        )
    )
    section.add(
        Figure("baseline: the engine alone in-process (`engine_seconds`, INFO)", engine, "µs/node")
    )
    section.add(Figure("ratio execute / engine alone, per node", ratios(marginal, engine), "x"))
    section.add(
        Figure(
            f"execute, WARNING: ({n:,}-node - {SMALL}-node INFO) / {extra:,}",
            warn_marginal,
            "µs/node",
        )
    )
    section.add(Figure(f"execute of the {n:,}-node file, INFO", s["big"], "s"))
    section.add(
        Figure(f"execute of the {SMALL}-node file, INFO", [x * 1000 for x in s["small"]], "ms")
    )
    section.add(Figure("baseline: `python -c pass`", [x * 1000 for x in s["pass"]], "ms"))
    for key, label in (
        ("before", "process start to `workflow.received` (imports, settings, registry, store)"),
        ("run", "`workflow.received` to `workflow.finished`"),
        ("after", "`workflow.finished` to the process's exit (summary, closing)"),
    ):
        section.add(
            Figure(f"{SMALL}-node execute: {label}", [x * 1000 for x in small_split[key]], "ms")
        )
    _parts_figures(section, s, s["big"])
    section.notes.append(
        f"File of {big_file.stat().st_size / 1e6:.2f} MB; max_concurrent_tasks 16 (the default);"
        " each `execute` a fresh process (bytecode cached, warmed once) on a fresh"
        " database, stdout and stderr pipes drained by `subprocess.run`. Parts: `execute`'s own"
        " functions called in the benchmark process on the same file and a fresh database,"
        " logs at WARNING (their share is the whole process at INFO minus at WARNING),"
        " `perf_counter` around each; run creation and `build_summary` timed by wrapping them"
        " inside `Engine.run`, whose remainder is the engine part; printing writes to a pipe"
        " a thread drains. Start-up and fixed costs (imports, settings, registry, opening the"
        " store and the HTTP client, the signal watcher) are the whole 10-node `execute`."
    )
    return big_file


def _rows_1_2_title(row: str, shape: str, n: int) -> str:
    return f"{row}: `wfe-daemon execute` of a {n:,}-node {shape}, as a whole process"


def e2e_fanout(ctx: Context) -> Section:
    """Row 18 (E1): execute of a fan-out, minus a 10-node one, per node; the breakdown."""
    load = loadavg()
    n = ctx.size(10_010, 60)
    section = Section(
        "e2e_fanout",
        _rows_1_2_title("18. E1", "`echo` fan-out", n),
        "`python -m wfe_daemon execute FILE` of row 1's fan-out (one root, every other node"
        f" depending on it), minus the same of a {SMALL}-node fan-out, per extra node; logs"
        " at INFO (the default) on stderr and the summary on stdout, both pipes the benchmark"
        " drains; a fresh database per run. Baselines in the same rounds: the engine alone"
        " in-process on the same workflow (`engine_seconds` of row 1, logs INFO to /dev/null),"
        " `python -c pass`, and the same `execute` at WARNING. The parts are measured"
        " in-process (see the notes); their sum is checked against the whole process.",
    )
    big_file = _whole_vs_parts(ctx, section, fanout_doc(n), fanout_doc(SMALL), 50.0)
    ctx.progress("e2e_fanout: cProfile")
    root = big_file.parent
    top, total = profile_top(big_file, _env(root, "INFO"), root, ctx.tmp / "e1.prof")
    section.notes.append(
        f"cProfile of one `python -m cProfile -m wfe_daemon execute` of the {n:,}-node file"
        f" (main thread only: {total:.2f} s; the SQLite thread is not seen), the 15 costliest"
        " functions by own time: " + "; ".join(top) + "."
    )
    section.notes.append(_load_note(load) + " The machine is shared: other work skews the figures.")
    return section


def e2e_chain(ctx: Context) -> Section:
    """Row 19 (E2): execute of a chain, minus a 10-node one, per node; the breakdown."""
    load = loadavg()
    n = ctx.size(10_010, 60)
    section = Section(
        "e2e_chain",
        _rows_1_2_title("19. E2", "`echo` chain", n),
        "`python -m wfe_daemon execute FILE` of row 2's chain (each node's params reference"
        f" its parent's output), minus the same of a {SMALL}-node chain, per extra node; the"
        " figures and parts as in 18.",
    )
    _whole_vs_parts(ctx, section, chain_doc(n), chain_doc(SMALL), 100.0)
    section.notes.append(_load_note(load) + " The machine is shared: other work skews the figures.")
    return section


# -- row E4 ---------------------------------------------------------------------------------------


def e2e_http(ctx: Context) -> Section:
    """Row 21 (E4): execute of http_get nodes against a slow local server, over the ideal."""
    load = loadavg()
    nodes, concurrency = ctx.size(1_000, 40), ctx.size(100, 10)
    delay_s = ctx.size(50, 20) / 1000
    ideal = nodes / concurrency * delay_s
    section = Section(
        "e2e_http",
        f"21. E4: `wfe-daemon execute` of {nodes:,} `http_get` nodes, {concurrency} at once,"
        f" against a {delay_s * 1000:g} ms local server",
        f"`python -m wfe_daemon execute FILE` (a whole process, logs INFO on a drained pipe,"
        f" `WFE_MAX_CONCURRENT_TASKS={concurrency}`, a fresh database) of {nodes:,} independent"
        f" `http_get` nodes against row 6's server (`python -m benchmarks.http serve`), which"
        f" reports the window from the first request it sees to the last answer it sends;"
        f" over the ideal {nodes} / {concurrency} x {delay_s * 1000:g} ms = {ideal:g} s."
        f" Beside it, alternating: aiohttp alone against the same server, a fresh process"
        f" and pool each time (`python -m benchmarks.http client aiohttp-alone`), the same window.",
    )
    root = ctx.tmp / "e4"
    env = _env(root, "INFO", WFE_MAX_CONCURRENT_TASKS=str(concurrency))
    file = root / "http.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http", "serve", str(delay_s)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    stdin, stdout = server.stdin, server.stdout

    def window(expected: int) -> float:
        stdin.write("window\n")
        stdin.flush()
        seen = json.loads(stdout.readline())
        if seen["requests"] != expected:
            raise RuntimeError(f"the server saw {seen['requests']} requests, not {expected}")
        return float(seen["last"] - seen["first"])

    execute_s, window_s, alone_s = [], [], []
    try:
        url = f"http://127.0.0.1:{int(stdout.readline())}"
        doc = {
            "name": "http e2e",
            "nodes": [
                {"id": f"n{i}", "type": "http_get", "params": {"url": f"{url}/item/{i}"}}
                for i in range(nodes)
            ],
        }
        file.write_bytes(encode(doc))
        if not ctx.quick:  # warm-up: the bytecode cache (in smoke mode the first run fills it)
            _execute(file, env, root, nodes)
            window(nodes)
        client = [sys.executable, "-m", "benchmarks.http", "client", "aiohttp-alone", url]
        client += [str(nodes), str(concurrency), "0", str(root)]
        for run in range(ctx.runs):
            ctx.progress(f"e2e_http: run {run + 1}/{ctx.runs}")
            execute_s.append(_execute(file, env, root, nodes))
            window_s.append(window(nodes))
            subprocess.run(client, cwd=ROOT, capture_output=True, check=True, timeout=600)
            alone_s.append(window(nodes))
    finally:
        stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    ideals = [ideal] * len(window_s)
    section.add(Figure("execute: server window / ideal", ratios(window_s, ideals), "x", 1.2))
    section.add(Figure("aiohttp alone: server window / ideal", ratios(alone_s, ideals), "x"))
    section.add(Figure("ratio execute / aiohttp alone (windows)", ratios(window_s, alone_s), "x"))
    section.add(Figure("execute: server window", window_s, "s"))
    section.add(Figure("aiohttp alone: server window", alone_s, "s"))
    section.add(Figure("execute: the whole process", execute_s, "s"))
    section.notes.append(_load_note(load) + " The machine is shared: other work skews the figures.")
    return section
