"""The web page at ``/``, driven in the system's Chromium by Playwright against a real daemon.

The browser (``page_browser.py``) records every request and console line; each test
checks that none left 127.0.0.1 and that the console shows no error. With
``WFE_SCREENSHOTS=<folder>`` set, the tests save a PNG of each of the four views there
(``docs/page-*.png`` come from ``WFE_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, free_port, get, wait_result, wait_running
from page_browser import CHROMIUM, WAIT_MS, Browser, chromium, pipeline, quick
from wfe_daemon.web.page import STATIC

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the page tests need Debian's chromium (apt install chromium)"
)

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
HOSTILE_FILE = '<img src=x onerror="window.pwned = 3">'
"""A file's name (its stem) can hold markup too, but no slash."""


def branching(name: str, seconds: float) -> dict[str, Any]:
    """``pipeline`` and a second branch from ``a``: ``d`` times out (FAILED), so ``e`` is
    SKIPPED and the run ends PARTIAL_SUCCESS."""
    doc = pipeline(name, seconds)
    doc["nodes"][1:1] = [
        {"id": "e", "type": "echo", "depends_on": ["d"], "params": {}},
        doc["nodes"].pop(1),  # b
        {"id": "d", "type": "sleep", "depends_on": ["a"], "timeout": 0.2, "params": {"seconds": 5}},
    ]
    return doc


def failing(name: str) -> dict[str, Any]:
    """A sleep node with too short a timeout: the run FAILS."""
    return {
        "name": name,
        "nodes": [{"id": "slow", "type": "sleep", "timeout": 0.1, "params": {"seconds": 5}}],
    }


@pytest.fixture
async def browser(daemons: Daemons, tmp_path: Path) -> AsyncIterator[Browser]:
    """A daemon with the HTTP server on, and a fresh headless Chromium with one page on it."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    async with chromium(port, tmp_path / "chromium-profile") as seen:
        yield seen


def test_the_page_and_its_files_are_served_with_their_types(daemons: Daemons) -> None:
    """``/`` is the HTML page, every file of ``/static/`` carries its type and the strict CSP,
    and a name outside the fixed list is a JSON 404 naming it."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    status, body = get(port, "/")
    assert status == 200 and b'<script type="module" src="/static/app.js"></script>' in body
    for name, kind in STATIC.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{name}", timeout=5) as r:
            assert r.headers["Content-Type"].startswith(kind)
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    for bad in ("index.htm", "..%2Fserver.py", "%2e%2e%2f%2e%2e%2fpyproject.toml", "page.py"):
        status, body = get(port, f"/static/{bad}")
        assert status == 404, bad
        assert "no static file" in json.loads(body)["error"]


@pytest.mark.timeout(90)
async def test_runs_table_counts_filters_paging_and_live_rows(
    browser: Browser, daemons: Daemons
) -> None:
    """The runs view lists runs newest first with their counts, filters by status, workflow
    and start time, pages with the cursor, and shows a new run appear and change status as
    it happens."""
    drop(daemons.inbox, "one.json", quick("first"))
    wait_result(daemons.outbox, "one")
    drop(daemons.inbox, "two.json", failing("second"))
    wait_result(daemons.outbox, "two")
    drop(daemons.inbox, "three.json", quick("third"))
    wait_result(daemons.outbox, "three")

    await browser.open("#/runs")
    assert await browser.texts("#runs-body .workflow") == ["third", "second", "first"]
    assert await browser.texts("#runs-body .status") == ["SUCCESS", "FAILED", "SUCCESS"]
    assert await browser.texts("#runs-body .source") == ["three.json", "two.json", "one.json"]
    assert "timed out" in (await browser.texts("#runs-body tr:nth-child(2) .error"))[0]
    assert await browser.texts('#counts [data-status="total"] .chip-count') == ["3"]
    assert await browser.texts('#counts [data-status="SUCCESS"] .chip-count') == ["2"]
    assert await browser.texts('#counts [data-status="FAILED"] .chip-count') == ["1"]

    drop(daemons.inbox, "four.json", pipeline("fourth", 2.0))
    row = browser.page.locator('#runs-body tr:has(td.workflow:text-is("fourth"))')
    await row.locator(".badge.status-RUNNING").wait_for(timeout=WAIT_MS)
    assert await browser.texts("#runs-body .workflow") == ["fourth", "third", "second", "first"]
    await row.locator(".badge.status-SUCCESS").wait_for(timeout=WAIT_MS)
    await browser.page.locator('#counts [data-status="SUCCESS"] .chip-count:text-is("3")').wait_for(
        timeout=WAIT_MS
    )
    await browser.screenshot("runs")

    await browser.page.select_option("#f-status", "FAILED")
    await browser.page.click("#run-filters button[type=submit]")
    await browser.page.wait_for_function(
        "() => document.body.dataset.ready === '#/runs?status=FAILED'", timeout=WAIT_MS
    )
    assert await browser.texts("#runs-body .workflow") == ["second"]

    await browser.open("#/runs?workflow=third")
    assert await browser.texts("#runs-body .workflow") == ["third"]
    assert await browser.texts('#counts [data-status="total"] .chip-count') == ["1"]
    await browser.page.fill("#f-since", "2099-01-01T00:00")
    await browser.page.click("#run-filters button[type=submit]")
    await browser.page.wait_for_function(
        "() => document.body.dataset.ready.includes('since=2099')", timeout=WAIT_MS
    )
    assert await browser.page.locator("#runs-body tr").count() == 0
    assert await browser.texts("#runs-note") == ["No runs match."]
    assert await browser.texts('#counts [data-status="total"] .chip-count') == ["0"]

    await browser.open("#/runs?limit=2")
    assert await browser.texts("#runs-body .workflow") == ["fourth", "third"]
    await browser.page.click("#more")
    await browser.page.locator("#runs-body tr").nth(3).wait_for(timeout=WAIT_MS)
    assert await browser.texts("#runs-body .workflow") == ["fourth", "third", "second", "first"]
    assert await browser.page.locator("#more").is_hidden()
    browser.check_clean()


@pytest.mark.timeout(90)
async def test_a_run_recolours_its_graph_live_and_opens_a_node(
    browser: Browser, daemons: Daemons
) -> None:
    """A run's view shows its header, a graph whose running node turns from RUNNING to
    SUCCESS as the run advances, a timeline and the nodes in dependency order; clicking a
    node opens its params (resolved, the secret redacted) and output, a skipped node says
    why; a duplicate's header links the run it duplicates."""
    drop(daemons.inbox, "pipe.json", branching("pipe", 3.0))
    run_id = wait_running(daemons.db_path, "b")

    await browser.open(f"#/runs/{run_id}")
    node_b = browser.page.locator("#graph g.wfe-node#node-b")
    assert "status-RUNNING" in ((await node_b.get_attribute("class")) or "")
    assert await browser.texts("#run-workflow") == ["pipe"]
    header = (await browser.texts("#run-header .facts"))[0]
    assert "pipe.json" in header and "pipe-key" in header
    await browser.page.locator("#graph g.wfe-node#node-b.status-SUCCESS").wait_for(timeout=WAIT_MS)
    await browser.page.locator("#run-header .badge.status-PARTIAL_SUCCESS").wait_for(
        timeout=WAIT_MS
    )
    await browser.page.wait_for_function(
        "() => document.querySelectorAll('#nodes .badge.status-SUCCESS').length === 3",
        timeout=WAIT_MS,
    )
    summary = wait_result(daemons.outbox, "pipe")
    assert summary["status"] == "PARTIAL_SUCCESS"
    order = ["a", "b", "d", "c", "e"]  # by dependency, then as listed (c, e, b, d, a)
    assert await browser.texts("#nodes tbody tr td:first-child") == order
    assert await browser.texts("#nodes td.status") == [
        summary["nodes"][node]["status"] for node in order
    ]
    assert await browser.texts("#timeline .gantt-row[data-node] .gantt-label") == order
    assert await browser.page.locator("#timeline .gantt-bar").count() == 4  # e never started
    for node, status in (("d", "FAILED"), ("e", "SKIPPED")):
        assert "status-" + status in (
            await browser.page.locator(f"#graph g.wfe-node#node-{node}").get_attribute("class")
            or ""
        )
    await browser.screenshot("run")

    await browser.page.locator("#graph g.wfe-node#node-c").click()
    await browser.page.wait_for_function(
        "route => document.body.dataset.ready === route",
        arg=f"#/runs/{run_id}/nodes/c",
        timeout=WAIT_MS,
    )
    assert await browser.texts("#node-id") == ["c"]
    params = json.loads((await browser.texts("#node-params pre"))[0])
    assert params == {"said": "hello", "api_token": "***"}
    output = json.loads((await browser.texts("#node-output pre"))[0])
    assert output == summary["nodes"]["c"]["output"]
    await browser.screenshot("node")
    await browser.open(f"#/runs/{run_id}/nodes/e")
    assert await browser.texts("#node-reason") == [summary["nodes"]["e"]["reason"]]

    drop(daemons.inbox, "again.json", branching("pipe", 3.0))
    duplicate = wait_result(daemons.outbox, "again")
    assert duplicate["status"] == "DUPLICATE"
    await browser.open(f"#/runs/{duplicate['run_id']}")
    link = browser.page.locator(f'#run-header a[href="#/runs/{run_id}"]')
    assert (await link.inner_text()).strip() == f"#{run_id}"
    browser.check_clean()


async def test_task_types_show_descriptions_and_params(browser: Browser) -> None:
    """The task types view lists every registered type with its description and params."""
    await browser.open("#/tasks")
    types = await browser.texts("#tasks .task h2")
    assert {"echo", "sleep", "http_get", "validate_csv", "save_db"} <= set(types)
    sleep = browser.page.locator('#tasks .task[data-type="sleep"]')
    assert (await sleep.locator(".description").inner_text()).strip()
    assert "seconds" in await sleep.locator("table.params").inner_text()
    await browser.screenshot("tasks", full_page=False)  # the first types: the page is long
    browser.check_clean()


@pytest.mark.timeout(90)
async def test_markup_in_names_params_and_errors_shows_as_text(
    browser: Browser, daemons: Daemons
) -> None:
    """A workflow named with ``<script>`` and ``<img onerror>``, with such params and file
    name, and a file rejected for such node ids, show that text as text everywhere: nothing
    runs, no element is injected."""
    doc = {
        "name": HOSTILE,
        "nodes": [{"id": "x", "type": "echo", "params": {"html": HOSTILE}}],
    }
    drop(daemons.inbox, f"{HOSTILE_FILE}.json", doc)
    run_id = wait_result(daemons.outbox, HOSTILE_FILE)["run_id"]
    bad_ids = {"name": "bad ids", "nodes": [{"id": HOSTILE, "type": "echo", "params": {}}]}
    drop(daemons.inbox, "badids.json", bad_ids)
    rejected_run = wait_result(daemons.outbox, "badids")
    assert rejected_run["status"] == "REJECTED"

    await browser.open("#/runs")
    assert (await browser.texts("#runs-body .workflow"))[1] == HOSTILE
    assert (await browser.texts("#runs-body .source"))[1] == f"{HOSTILE_FILE}.json"
    rejected = (await browser.texts("#runs-body tr:first-child .error"))[0]
    assert "<img src=x onerror=" in rejected
    await browser.open(f"#/runs/{rejected_run['run_id']}")
    assert rejected_run["errors"] == await browser.texts("#run-header .errors li")
    assert any("<img src=x onerror=" in error for error in rejected_run["errors"])
    await browser.open(f"#/runs/{run_id}")
    assert await browser.texts("#run-workflow") == [HOSTILE]
    assert f"{HOSTILE_FILE}.json" in (await browser.texts("#run-header .facts"))[0]
    await browser.open(f"#/runs/{run_id}/nodes/x")
    assert json.loads((await browser.texts("#node-params pre"))[0]) == {"html": HOSTILE}
    assert json.loads((await browser.texts("#node-output pre"))[0]) == {"html": HOSTILE}
    assert await browser.page.evaluate("() => window.pwned") is None
    assert await browser.page.locator("main script, main img").count() == 0
    browser.check_clean()


@pytest.mark.timeout(90)
async def test_the_runs_view_catches_up_after_the_daemon_restarts(
    browser: Browser, daemons: Daemons
) -> None:
    """When the daemon restarts on the same port, the page's event stream reconnects (the
    new daemon tells it to reset) and the runs view shows the runs that ran meanwhile."""
    drop(daemons.inbox, "before.json", quick("before"))
    wait_result(daemons.outbox, "before")
    await browser.open("#/runs")
    assert await browser.texts("#runs-body .workflow") == ["before"]
    await browser.page.locator("#live.on").wait_for(timeout=WAIT_MS)

    assert daemons.started[0].terminate() == 0
    port = browser.base.rsplit(":", 1)[1]
    daemons.start(WFE_HTTP_PORT=port)
    drop(daemons.inbox, "after.json", quick("after"))
    wait_result(daemons.outbox, "after")
    await browser.page.locator('#runs-body td.workflow:text-is("after")').wait_for(timeout=WAIT_MS)
    assert await browser.texts("#runs-body .workflow") == ["after", "before"]
    assert await browser.texts('#counts [data-status="total"] .chip-count') == ["2"]
    await browser.page.locator("#live.on").wait_for(timeout=WAIT_MS)
    browser.check_clean(daemon_down=True)


async def test_the_feed_parser_reads_frames_as_eventsource_does(browser: Browser) -> None:
    """The page's Server-Sent Events parser, fed a stream whole or a character at a time (so
    cut inside lines and between ``\\r`` and ``\\n``), dispatches each event with its type
    and its data lines joined, skips comments and events without data, keeps the last id
    (an event without data sets it too) and the server's ``retry``, and drops an event the
    stream did not finish."""
    stream = (
        ': connected\n\nid: b-1\nevent: run\ndata: {"a": 1}\n\n'
        "id: b-2\r\nevent: node\r\ndata: line1\r\ndata:  line2\r\n\r\n: keep-alive\r\r"
        "id: b-3\nevent: reset\n\nretry: 2500\ndata:no-space\n\nevent: cut\ndata: never"
    )
    await browser.open("#/tasks")
    for chunks in ([stream], list(stream)):
        got = await browser.page.evaluate(
            """async (chunks) => {
              const { Frames } = await import("/static/live.js");
              const events = [];
              const frames = new Frames((type, data) => events.push([type, data, frames.lastId]));
              for (const chunk of chunks) frames.feed(chunk);
              frames.restart();
              frames.feed("\\n");
              return { events, lastId: frames.lastId, retry: frames.retry };
            }""",
            chunks,
        )
        assert got == {
            "events": [
                ["run", '{"a": 1}', "b-1"],
                ["node", "line1\n line2", "b-2"],
                ["message", "no-space", "b-3"],
            ],
            "lastId": "b-3",
            "retry": 2500,
        }
    browser.check_clean()
