"""HTTP API benchmarks (RESULTS.md rows 11 and 12): the real daemon with ``WFE_HTTP_PORT``.

- ``api_submit`` (row 11): ``POST /api/v1/workflows`` of a one-node ``echo`` workflow,
  timed from just before the request to the moment ``outbox/<stem>.result.json`` exists
  (raw inotify, as row 4), one at a time over one keep-alive connection; then sustained
  submissions: 50 clients posting one-node workflows for a few seconds, counting the
  ``201`` answers a second, then every result checked (none lost, none doubled).
- ``api_reads`` (row 12): with 100,000 finished runs in the database (inserted with SQL
  before the daemon starts), ``GET /api/v1/runs`` (first page, 50 runs) over one keep-alive
  connection, and the runs page in a real headless Chromium (Playwright, the system
  browser) from navigation to the table's rows drawn; the page figure is skipped where no
  browser or Playwright is installed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._suite import Context, Figure, Section
from benchmarks.daemon import (
    LOG_LEVEL,
    DaemonRun,
    OutboxWatch,
    _load_note,
    _percentile,
    echo_doc,
    loadavg,
)

TOKEN = "benchmark-token-0123456789"
SUSTAIN_S = 4.0
CLIENTS = 50
RUNS_IN_DB = 100_000


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _with_api(run: DaemonRun, port: int) -> None:
    run.extra_env.update(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)


def _post(conn: http.client.HTTPConnection, name: str) -> dict[str, Any]:
    body = json.dumps(echo_doc(name)).encode()
    conn.request(
        "POST",
        f"/api/v1/workflows?name={name}",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    response = conn.getresponse()
    answer: dict[str, Any] = json.loads(response.read())
    if response.status != 201:
        raise RuntimeError(f"POST {name}: {response.status} {answer}")
    return answer


def submit_once(root: Path, measured: int) -> dict[str, Any]:
    """One daemon: ``measured`` POSTs one at a time to their results, then a sustained load."""
    run = DaemonRun(root)
    port = _free_port()
    _with_api(run, port)
    try:
        run.start()
        watch = OutboxWatch(run.outbox)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            latencies = []
            for i in range(5 + measured):
                name = f"p-{i:05d}"
                t0 = time.perf_counter()
                _post(conn, name)
                arrived = watch.wait_for(f"{name}.result.json", 10.0, run)
                if i >= 5:  # the first five are a warm-up
                    latencies.append(arrived - t0)
            accepted, seconds = asyncio.run(_sustain(port))
            for name in accepted:
                watch.wait_for(f"{name}.result.json", 120.0, run)
            statuses = {
                json.loads((run.outbox / f"{name}.result.json").read_bytes())["status"]
                for name in accepted
            }
            if statuses != {"SUCCESS"}:
                raise RuntimeError(f"sustained submissions ended {statuses}")
            run.check_alive()
        finally:
            conn.close()
            watch.close()
    finally:
        run.kill()
    return {"latencies": latencies, "rate": len(accepted) / seconds, "accepted": len(accepted)}


async def _sustain(port: int) -> tuple[list[str], float]:
    """``CLIENTS`` clients POSTing for ``SUSTAIN_S`` seconds: the names accepted, seconds.

    aiohttp's client, lighter than httpx's, so the client side is not what is measured.
    """
    import aiohttp

    accepted: list[str] = []
    refused: list[str] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}", headers=headers, connector=connector
    ) as client:
        stop_at = time.perf_counter() + SUSTAIN_S

        async def one_client(c: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                name = f"s-{c:03d}-{n:05d}"
                n += 1
                async with client.post(
                    f"/api/v1/workflows?name={name}", json=echo_doc(name)
                ) as response:
                    if response.status == 503:  # the daemon's queue is full: back off
                        refused.append(name)
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if response.status != 201:
                        raise RuntimeError(
                            f"POST {name}: {response.status} {await response.text()}"
                        )
                accepted.append(name)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(CLIENTS)))
        seconds = time.perf_counter() - t0
    if refused:
        print(f"  .. {len(refused)} submissions answered 503 (queue full)", file=sys.stderr)
    return accepted, seconds


def api_submit(ctx: Context) -> Section:
    load = loadavg()
    measured = ctx.size(100, 5)
    section = Section(
        "api_submit",
        "11. API: a submission to its result, and sustained submissions",
        f"`POST /api/v1/workflows?name=<stem>` of a one-node `echo` workflow to the real "
        f"daemon (`WFE_HTTP_PORT`, `WFE_LOG_LEVEL={LOG_LEVEL}`), over one keep-alive "
        f"connection, one at a time: time from just before the request to the moment "
        f"`outbox/<stem>.result.json` exists (raw inotify, as row 4); {measured} per run after "
        f"5 not counted. Then {CLIENTS} clients (one process) post one-node workflows "
        f"for {SUSTAIN_S:g} s (aiohttp's client): `201` answers a second, and afterwards "
        f"every accepted submission's result is read back (each `SUCCESS`). A fresh daemon "
        f"each run.",
    )
    rounds = []
    for n in range(ctx.runs):
        ctx.progress(f"api_submit run {n + 1}/{ctx.runs}")
        rounds.append(submit_once(ctx.tmp / f"api-submit{n}", measured))
    ms = 1000.0
    section.add(
        Figure(
            "p50, POST to result",
            [_percentile(r["latencies"], 0.5) * ms for r in rounds],
            "ms",
            limit=20,
        )
    )
    section.add(
        Figure(
            "p95, POST to result",
            [_percentile(r["latencies"], 0.95) * ms for r in rounds],
            "ms",
            limit=50,
        )
    )
    section.add(
        Figure(
            "sustained submissions accepted",
            [r["rate"] for r in rounds],
            "per s",
            limit=500,
            lower_is_better=False,
        )
    )
    section.notes.append(
        f"None lost: {sum(r['accepted'] for r in rounds):,} sustained submissions in all, "
        "each with its SUCCESS result in the outbox."
    )
    section.notes.append(_load_note(load))
    return section


# -- row 12: reads with 100,000 runs -----------------------------------------------------------


def fill_runs(db_path: Path, count: int) -> None:
    """Insert ``count`` finished one-node runs (as the daemon would have left them)."""
    db = sqlite3.connect(db_path)
    try:
        rows = []
        for i in range(count):
            at = f"2026-{1 + i // 300_000:02d}-01T00:00:{i % 60:02d}.{i % 1000:03d}000+00:00"
            summary = {
                "run_id": i + 1,
                "workflow": f"w{i % 50}",
                "source": f"w{i % 50}.json",
                "status": "SUCCESS" if i % 7 else "FAILED",
                "started_at": at,
                "finished_at": at,
                "duration": 0.01,
                "nodes": {"a": {"type": "echo", "status": "SUCCESS", "output": None}},
                "errors": [],
            }
            rows.append((f"w{i % 50}", summary["status"], at, at, 0.01, json.dumps(summary), at))
        with db:
            db.executemany(
                "INSERT INTO workflowrun (name, status, started_at, finished_at, duration,"
                " result_summary, settled_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    finally:
        db.close()


def _get_ms(conn: http.client.HTTPConnection, path: str) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    seconds = time.perf_counter() - t0
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return seconds * 1000


async def _page_ms(port: int, tries: int) -> list[float]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    assert chromium is not None
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    times = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = await browser.new_page()
            for _ in range(tries):
                t0 = time.perf_counter()
                await page.goto(f"http://127.0.0.1:{port}/#/runs", wait_until="commit")
                await page.wait_for_selector("#runs tbody tr", timeout=10_000)
                times.append((time.perf_counter() - t0) * 1000)
                await page.goto("about:blank")
        finally:
            await browser.close()
    return times


def _browser_ready() -> bool:
    if shutil.which("chromium") is None:
        return False
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


def reads_once(root: Path, requests: int, count: int, browser: bool) -> dict[str, Any]:
    run = DaemonRun(root)
    port = _free_port()
    _with_api(run, port)
    try:
        run.start()  # creates the schema
    finally:
        run.kill()
    (root / "notify.sock").unlink()
    fill_runs(run.db_path, count)
    run = DaemonRun(root)
    _with_api(run, port)
    try:
        run.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(3):
                _get_ms(conn, "/api/v1/runs")
            first = [_get_ms(conn, "/api/v1/runs") for _ in range(requests)]
            filtered = [
                _get_ms(conn, "/api/v1/runs?status=FAILED&workflow=w7") for _ in range(requests)
            ]
            counts = [_get_ms(conn, "/api/v1/runs/counts") for _ in range(requests)]
        finally:
            conn.close()
        page = asyncio.run(_page_ms(port, max(3, requests // 4))) if browser else []
        run.check_alive()
    finally:
        run.kill()
    return {
        "first": statistics.median(first),
        "filtered": statistics.median(filtered),
        "counts": statistics.median(counts),
        "page": statistics.median(page) if page else None,
    }


def api_reads(ctx: Context) -> Section:
    load = loadavg()
    count = ctx.size(RUNS_IN_DB, 2_000)
    requests = ctx.size(20, 4)
    browser = _browser_ready()
    section = Section(
        "api_reads",
        f"12. API: the runs list and the runs page with {count:,} runs in the database",
        f"{count:,} finished runs inserted with SQL before the daemon starts "
        f"(`WFE_HTTP_PORT`). Medians of {requests} requests over one keep-alive connection "
        f"(after 3 not counted): `GET /api/v1/runs` (the first page, 50 runs), the same "
        f"filtered by status and workflow, and `GET /api/v1/runs/counts`; then the web page "
        f"in headless Chromium (Playwright driving the system `chromium`): from `goto "
        f"/#/runs` to the first row of the runs table drawn.",
    )
    rounds = []
    for n in range(ctx.runs):
        ctx.progress(f"api_reads run {n + 1}/{ctx.runs}")
        rounds.append(reads_once(ctx.tmp / f"api-reads{n}", requests, count, browser))
    section.add(
        Figure("GET /api/v1/runs, first page", [r["first"] for r in rounds], "ms", limit=50)
    )
    section.add(Figure("the same, filtered", [r["filtered"] for r in rounds], "ms"))
    section.add(Figure("GET /api/v1/runs/counts", [r["counts"] for r in rounds], "ms"))
    if browser:
        section.add(
            Figure("runs page to its table drawn", [r["page"] for r in rounds], "ms", limit=300)
        )
    else:
        section.notes.append("The page figure was not measured: no chromium or Playwright here.")
    section.notes.append(_load_note(load))
    return section
