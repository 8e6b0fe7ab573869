"""The HTTP front of the daemon: ``front_for`` builds it from the settings, and the daemon
serves it (``service.daemon.Front``): started before READY=1, stopped first on SIGTERM.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.streams.memory import MemoryObjectSendStream

from wfe_daemon.config import Settings
from wfe_daemon.errors import UsageError
from wfe_daemon.service.apitoken import read_token
from wfe_daemon.service.daemon import Daemon
from wfe_daemon.service.intake import Claimed
from wfe_daemon.service.metrics import Followed, Telemetry
from wfe_daemon.store.database import Store
from wfe_daemon.web import events, openapi, page, runs, submit
from wfe_daemon.web.server import Api, Route, build_app

__all__ = ["HttpFront", "front_for", "is_loopback"]

log = structlog.get_logger()

_HANDOFF_S = 1.0
"""How long a stopping front waits for the workers' queue to take what was handed over."""
_RECORD_GRACE_S = 0.5
"""At shutdown, how long a submission being recorded may take before it is answered 503
("may still run"): within the server's 1 s for the requests in flight."""


def parts() -> list[Route]:
    """The routes of the API and the page, each from its own module."""
    return [openapi.routes, runs.routes, submit.routes, events.routes, page.routes]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def front_for(settings: Settings, environ: Mapping[str, str]) -> HttpFront | None:
    """The HTTP front for ``settings``, or ``None`` when ``http_port`` (and its old name
    ``metrics_port``) is 0. Reads the token now, so a problem stops the start at once.

    Raises:
        UsageError: a bind other than loopback without a token, or an unreadable token.
    """
    port = settings.http_port
    if settings.metrics_port:
        if port:
            log.warning(
                "config.deprecated",
                key="metrics_port",
                message="metrics_port is ignored: http_port is set",
            )
        else:
            port = settings.metrics_port
            log.warning(
                "config.deprecated",
                key="metrics_port",
                message="metrics_port is deprecated: set http_port instead",
            )
    if not port:
        return None
    token = read_token(settings, environ)
    loopback = is_loopback(settings.http_host)
    if not loopback and token is None:
        raise UsageError(
            f"http_host {settings.http_host} is not a loopback address: the API then needs a "
            "token for reads too; set api_token_file or WFE_API_TOKEN"
        )
    return HttpFront(settings, port, token, reads_need_token=not loopback)


class HttpFront:
    """The server of one daemon (``service.daemon.Front``): the metrics follow its engine."""

    def __init__(
        self, settings: Settings, port: int, token: bytes | None, *, reads_need_token: bool
    ) -> None:
        self.settings = settings
        self.port = port
        self.token = token
        self.reads_need_token = reads_need_token
        self.telemetry = Telemetry()

    def engine_options(self) -> dict[str, Any]:
        return self.telemetry.engine_options()

    @asynccontextmanager
    async def serving(
        self, daemon: Daemon, queue: MemoryObjectSendStream[Claimed]
    ) -> AsyncIterator[None]:
        """Listen and follow ``daemon`` until the block ends, then close every connection
        (the event streams end first, cleanly).

        Raises:
            UsageError: the address cannot be bound (the message names ``http_port``).
        """
        settings = self.settings
        async with Store.open_read_only(settings.db_path) as reader:
            api = Api(
                settings,
                daemon,
                self.telemetry,
                queue,
                self.token,
                self.reads_need_token,
                reader=reader,
            )
            async with self._listening(api, daemon, queue):
                yield

    @asynccontextmanager
    async def _listening(
        self, api: Api, daemon: Daemon, queue: MemoryObjectSendStream[Claimed]
    ) -> AsyncIterator[None]:
        settings = self.settings
        app = build_app(api, parts())
        hub = app[events.EVENTS] = events.EventHub()

        async def interrupt_submissions(app: web.Application) -> None:
            # The server has stopped listening and waits for the requests in flight: a
            # submission whose record is still pending is answered "may still run" now.
            await api.handover.interrupt(_RECORD_GRACE_S)

        app.on_shutdown.append(interrupt_submissions)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        unwatch = daemon.store.watch(hub.publish)
        try:
            site = web.TCPSite(runner, settings.http_host, self.port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                raise UsageError(
                    f"http_port: cannot listen on {settings.http_host}:{self.port}: "
                    f"{exc.strerror or exc}"
                ) from None
            async with anyio.create_task_group() as tg:
                await tg.start(self.telemetry.run, _followed(daemon), queue)
                await tg.start(api.handover.feed, queue)
                log.info("http.listening", host=settings.http_host, port=self.port)
                try:
                    yield
                finally:
                    # Stopped cleanly, the server answers the requests in flight (1 s at
                    # most) while the handover still feeds the workers, which then get
                    # what those requests handed over (1 s at most: the rest resumes at
                    # the next start).
                    with anyio.CancelScope(shield=True):
                        hub.close()
                        await runner.cleanup()
                        with anyio.move_on_after(_HANDOFF_S):
                            await api.handover.sent()
                    tg.cancel_scope.cancel()
        finally:
            unwatch()
            hub.close()
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


def _followed(daemon: Daemon) -> Followed:
    """What the telemetry reads of ``daemon``: plain values and callables over its state."""
    return Followed(
        store=daemon.store,
        db_path=daemon.settings.db_path,
        active=lambda: daemon.active,
        waiting=lambda: daemon.waiting,
        watching=lambda: daemon.watching,
        faults=daemon.faults.active,
        on_published=daemon.on_published,
        on_notified=daemon.on_notified,
        cluster=daemon.cluster,
    )
