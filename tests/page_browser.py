"""A fresh headless Chromium on one page of a daemon, for the page's tests.

Chromium runs headless on a fresh profile with its background networking off; every
request it makes is recorded, and a test checks that none left 127.0.0.1 and that the
console shows no error (a Content-Security-Policy violation is one). Closing the browser
leaves none of its processes (found by their profile folder, killed by pid if ever).
Below it, workflows the page's tests run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import ConsoleMessage, Page, Request, async_playwright

__all__ = ["CHROMIUM", "WAIT_MS", "Browser", "chromium", "pipeline", "quick"]

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


@dataclass
class Browser:
    """One page in a fresh Chromium, with what it requested and logged."""

    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    calls: list[Request] = field(default_factory=list)
    """Every request, with its headers (``await call.all_headers()``)."""
    console: list[ConsoleMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Every response with a status of 400 or more, as ``<status> <url>``."""

    async def open(self, route: str) -> None:
        """Go to ``<base>/<route>`` and wait until the page has drawn it."""
        await self.page.goto(f"{self.base}/{route}")
        await self.wait_ready(route)

    async def wait_ready(self, route: str) -> None:
        """Wait until the page has drawn ``route`` (``token``: the form asking for the token)."""
        await self.page.wait_for_function(
            "route => document.body.dataset.ready === route", arg=route, timeout=WAIT_MS
        )

    async def texts(self, selector: str) -> list[str]:
        """The text of every element ``selector`` matches."""
        return [text.strip() for text in await self.page.locator(selector).all_inner_texts()]

    async def screenshot(self, name: str, *, full_page: bool = True) -> None:
        """Save the view as ``<WFE_SCREENSHOTS>/page-<name>.png`` when that variable is set."""
        folder = os.environ.get("WFE_SCREENSHOTS")
        if folder:
            path = Path(folder) / f"page-{name}.png"
            await self.page.screenshot(path=str(path), full_page=full_page)

    def check_clean(self, *, refused_401: bool = False, daemon_down: bool = False) -> None:
        """Every request went to 127.0.0.1 (or was inline data); no console error, no CSP report.

        ``refused_401``: reads answered 401 (a missing or wrong token) were expected, and
        the browser's console line for each; ``daemon_down``: so were the console lines of
        connections refused while the daemon was stopped.
        """
        away = [url for url in self.requests if not url.startswith((self.base + "/", "data:"))]
        assert not away, f"requests left 127.0.0.1: {away}"
        failed = [f for f in self.failed if not (refused_401 and f.startswith("401 "))]
        assert not failed, f"failed requests: {failed}"
        expected = []
        if refused_401:
            expected.append("the server responded with a status of 401")
        if daemon_down:
            expected.append("net::ERR_CONNECTION_REFUSED")
        noisy = [
            f"{m.type}: {m.text}"
            for m in self.console
            if (m.type in ("error", "warning") or "Content Security Policy" in m.text)
            and not any(text in m.text for text in expected)
        ]
        assert not noisy, f"console: {noisy}"
        assert not self.errors, f"page errors: {self.errors}"


@contextlib.asynccontextmanager
async def chromium(port: int, profile: Path) -> AsyncIterator[Browser]:
    """A fresh headless Chromium (its profile in ``profile``) with one page on
    ``http://127.0.0.1:<port>``; on exit, no process of it is left."""
    assert CHROMIUM is not None
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
            timezone_id="UTC",
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            seen = Browser(page, f"http://127.0.0.1:{port}")
            context.on("request", lambda request: seen.requests.append(request.url))
            context.on("request", lambda request: seen.calls.append(request))
            page.on("console", lambda message: seen.console.append(message))
            page.on("pageerror", lambda error: seen.errors.append(str(error)))
            context.on(
                "response",
                lambda r: seen.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            yield seen
        finally:
            await context.close()
    left = _processes_using(profile)
    for pid in left:  # never expected: reaped here so that no browser outlives the test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"chromium processes left after closing the browser: {left}"


def _processes_using(profile: Path) -> list[int]:
    """The pids of the processes whose command line names ``profile`` (the browser's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if str(profile).encode() in cmdline:
            found.append(int(entry.name))
    return found


def pipeline(name: str, seconds: float) -> dict[str, Any]:
    """``a`` (echo) -> ``b`` (sleep) -> ``c`` (echo of ``a``'s output), listed out of order."""
    return {
        "name": name,
        "idempotency_key": f"{name}-key",
        "nodes": [
            {
                "id": "c",
                "type": "echo",
                "depends_on": ["b"],
                "params": {"said": "{{ a.greeting }}", "api_token": "hunter2"},
            },
            {"id": "b", "type": "sleep", "depends_on": ["a"], "params": {"seconds": seconds}},
            {"id": "a", "type": "echo", "params": {"greeting": "hello", "count": 3}},
        ],
    }


def quick(name: str) -> dict[str, Any]:
    """One echo node: the run ends at once."""
    return {"name": name, "nodes": [{"id": "a", "type": "echo", "params": {"n": name}}]}
