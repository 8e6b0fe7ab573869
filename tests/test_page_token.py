"""The web page on a bind other than loopback: it asks for the API token, keeps it in
``sessionStorage`` and sends it with every read, the live feed's included.

The daemon binds 0.0.0.0 with a token (reached here on 127.0.0.1 only); the browser is
``page_browser.py``'s, as in ``test_page.py``.
"""

from __future__ import annotations

import json
import re
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

TOKEN = "page-t0ken-0123456789"
ODD_TOKEN = "t0k/en+=:~!*0123456789"
"""A token of visible ASCII punctuation (what ``openssl rand -base64`` gives, and more): the
page sends it unchanged in the header, as the server compares it."""
TOKEN_KEY = "wfe-daemon.api-token"
"""Where the page keeps the token: this tab's ``sessionStorage``."""


def start_with_token(daemons: Daemons, port: int, token: str = TOKEN) -> None:
    """A daemon bound to 0.0.0.0 (reached on 127.0.0.1), every read needing ``token``."""
    daemons.start(WFE_HTTP_PORT=str(port), WFE_HTTP_HOST="0.0.0.0", WFE_API_TOKEN=token)


@pytest.fixture
async def token_browser(
    daemons: Daemons, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    """A daemon whose reads need the token (``TOKEN``, or the test's parameter), and a
    fresh headless Chromium on it."""
    port = free_port()
    start_with_token(daemons, port, getattr(request, "param", TOKEN))
    async with chromium(port, tmp_path / "chromium-profile") as seen:
        yield seen


async def enter_token(browser: Browser, token: str) -> None:
    """Type ``token`` into the page's form and send it."""
    await browser.page.fill("#token-input", token)
    await browser.page.click("#token-form button[type=submit]")


async def kept(browser: Browser) -> dict[str, Any]:
    """What the page keeps: the token in sessionStorage, localStorage's size, the cookies."""
    return dict(
        await browser.page.evaluate(
            """key => ({ session: sessionStorage.getItem(key), local: localStorage.length,
                         cookie: document.cookie })""",
            TOKEN_KEY,
        )
    )


def test_on_any_other_bind_the_page_loads_without_the_token(daemons: Daemons) -> None:
    """Bound to 0.0.0.0 with a token, ``/`` and every file of ``/static/`` answer without it
    (they hold no data), a name outside the list is still a 404, and everything else, the
    API's reads first, is 401."""
    port = free_port()
    start_with_token(daemons, port)
    status, body = get(port, "/")
    assert status == 200 and b"/static/app.js" in body
    for name in STATIC:
        assert get(port, f"/static/{name}")[0] == 200, name
    for path in ("/static/nothing.js", "/static/..%2Fapi%2Fv1%2Fruns"):
        status, body = get(port, path)
        assert status == 404 and "no static file" in json.loads(body)["error"], path
    for path in ("/api/v1/runs", "/api/v1/events", "/static/../api/v1/runs", "/index.html"):
        status, body = get(port, path)
        assert status == 401, path
        assert "API token" in json.loads(body)["error"], path


@pytest.mark.timeout(90)
async def test_the_page_asks_for_the_token_and_follows_runs_with_it(
    token_browser: Browser, daemons: Daemons
) -> None:
    """On a bind other than loopback the page asks for the API token: a wrong one is refused
    with the server's error, the right one shows the runs, and the live feed (read with the
    token) shows a new run and its node turning from RUNNING to SUCCESS. The token is kept
    in sessionStorage only (not localStorage, a cookie or any URL), and "Forget token"
    drops it and asks again."""
    browser = token_browser
    drop(daemons.inbox, "one.json", quick("first"))
    wait_result(daemons.outbox, "one")
    await browser.page.goto(f"{browser.base}/#/runs")
    await browser.wait_ready("token")
    assert await browser.page.locator("#token-input").get_attribute("type") == "password"
    assert await browser.page.locator("#token-error").is_hidden()
    assert await browser.page.locator("#forget-token").is_hidden()
    await enter_token(browser, "   ")
    assert await browser.texts("#token-error") == ["Enter the token."]

    await enter_token(browser, "wrong-token")
    await browser.page.locator("#token-error").wait_for(timeout=WAIT_MS)
    error = (await browser.texts("#token-error"))[0]
    assert "refused" in error and "missing or wrong API token" in error
    assert (await kept(browser))["session"] is None

    await enter_token(browser, TOKEN)
    await browser.wait_ready("#/runs")
    assert await browser.texts("#runs-body .workflow") == ["first"]
    assert await browser.page.locator("#forget-token").is_visible()
    await browser.page.locator("#live.on").wait_for(timeout=WAIT_MS)

    drop(daemons.inbox, "two.json", pipeline("second", 4.0))
    row = browser.page.locator('#runs-body tr:has(td.workflow:text-is("second"))')
    await row.locator(".badge.status-RUNNING").wait_for(timeout=WAIT_MS)
    run_id = wait_running(daemons.db_path, "b")
    await browser.open(f"#/runs/{run_id}")
    node_b = browser.page.locator("#graph g.wfe-node#node-b")
    assert "status-RUNNING" in ((await node_b.get_attribute("class")) or "")
    await browser.page.locator("#graph g.wfe-node#node-b.status-SUCCESS").wait_for(timeout=WAIT_MS)
    await browser.page.locator("#run-header .badge.status-SUCCESS").wait_for(timeout=WAIT_MS)

    assert await kept(browser) == {"session": TOKEN, "local": 0, "cookie": ""}
    assert not [url for url in browser.requests if TOKEN in url or "wrong-token" in url]
    feeds = [call for call in browser.calls if "/api/v1/events" in call.url]
    assert feeds and all(call.method == "GET" for call in feeds)
    assert (await feeds[-1].all_headers())["authorization"] == f"Bearer {TOKEN}"

    await browser.page.click("#forget-token")
    await browser.wait_ready("token")
    assert (await kept(browser))["session"] is None
    assert await browser.page.locator("#token-error").is_hidden()
    assert await browser.page.locator("#forget-token").is_hidden()
    browser.check_clean(refused_401=True)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("token_browser", [ODD_TOKEN], indirect=True)
async def test_with_the_token_the_feed_resumes_after_the_daemon_restarts(
    token_browser: Browser, daemons: Daemons
) -> None:
    """With a token in use (one of punctuation), when the daemon restarts on the
    same port the feed reconnects sending the token and the last event's id as
    ``Last-Event-ID``; the new daemon answers ``reset`` (the id is of another boot), and the
    runs view shows the run that ran meanwhile."""
    browser = token_browser
    await browser.page.goto(f"{browser.base}/#/runs")
    await browser.wait_ready("token")
    await enter_token(browser, ODD_TOKEN)
    await browser.wait_ready("#/runs")
    await browser.page.locator("#live.on").wait_for(timeout=WAIT_MS)
    drop(daemons.inbox, "before.json", quick("before"))
    await browser.page.locator('#runs-body td.workflow:text-is("before")').wait_for(timeout=WAIT_MS)
    first_feeds = len([call for call in browser.calls if "/api/v1/events" in call.url])

    assert daemons.started[0].terminate() == 0
    start_with_token(daemons, int(browser.base.rsplit(":", 1)[1]), ODD_TOKEN)
    drop(daemons.inbox, "after.json", quick("after"))
    wait_result(daemons.outbox, "after")
    await browser.page.locator('#runs-body td.workflow:text-is("after")').wait_for(timeout=WAIT_MS)
    assert await browser.texts("#runs-body .workflow") == ["after", "before"]
    await browser.page.locator("#live.on").wait_for(timeout=WAIT_MS)
    feeds = [call for call in browser.calls if "/api/v1/events" in call.url][first_feeds:]
    assert feeds, "the feed never reconnected"
    headers = [await call.all_headers() for call in feeds]
    assert all(h["authorization"].startswith("Bearer ") for h in headers)
    # the view's reload after reset follows anew, without an id
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9]+", headers[0].get("last-event-id", "")), headers[0]
    browser.check_clean(refused_401=True, daemon_down=True)
