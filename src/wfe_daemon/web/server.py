"""The HTTP server's application: what every answer gets, and what handlers share.

The server (``web/front.py``) runs one ``aiohttp.web`` application in the daemon's own
event loop, built only when ``http_port`` is set (so aiohttp's server side and prometheus
are imported only then). Each part of it (the API's reads, submissions, events, the
OpenAPI document, the page) is a module with a ``routes`` function; they import this one.

Every response carries the security headers; every error is JSON
``{"error": ..., "problems": [...]}``; every ``POST`` needs the bearer token, and so does
every read but ``/healthz`` and the page's own files (``/``, ``/static/{name}``: no data)
when the server binds an address other than loopback.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web
from anyio.streams.memory import MemoryObjectSendStream

from wfe_daemon.config import Settings
from wfe_daemon.service.daemon import Daemon
from wfe_daemon.service.handover import Handover
from wfe_daemon.service.intake import Claimed
from wfe_daemon.service.metrics import Telemetry
from wfe_daemon.store.database import Store
from wfe_daemon.web.graph import GraphRenderer

__all__ = ["API", "Api", "ApiError", "Route", "build_app", "reply"]

log = structlog.get_logger()

KEEPALIVE_S = 15.0
"""An idle connection (one that never sends a request, too) is closed after this long."""
BODY_TIMEOUT_S = 30.0
"""A request body not received in full within this long is answered 408."""

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_OPEN_PATHS = frozenset({"/healthz"})
"""Read without a token on any bind: a load balancer or a container health check."""
_PAGE_ROUTES = frozenset({"/", "/static/{name}"})
"""The page and its files, routed by ``web/page.py``: they hold no data, and a browser
must load them without a token to be asked for one."""


class ApiError(Exception):
    """An answer other than success: its status, a one-line error and every problem."""

    def __init__(
        self,
        status: int,
        error: str,
        problems: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.problems = list(problems)
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Api:
    """What the handlers work with: the daemon's parts and the server's own settings."""

    settings: Settings
    daemon: Daemon
    telemetry: Telemetry
    queue: MemoryObjectSendStream[Claimed]
    """Where the daemon's workers take claimed files (a submission goes there too)."""
    token: bytes | None
    reads_need_token: bool
    reader: Store | None = None
    """A read-only connection for the API's reads (else they use the daemon's store)."""
    graphs: GraphRenderer = field(default_factory=GraphRenderer)
    """Draws and keeps runs' graphs as SVG."""
    handover: Handover = field(default_factory=Handover)
    """Passes submissions to the workers through ``queue`` (its feeder runs in the front)."""


API: web.AppKey[Api] = web.AppKey("api", Api)

Route = Callable[[web.UrlDispatcher], None]
"""Adds one part's routes to the router (each module of this package has ``routes``)."""


def reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response (orjson: non-ASCII kept as UTF-8)."""
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a JSON error with its status; nothing else reaches the client."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = reply({"error": exc.error, "problems": exc.problems}, exc.status, exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
        response = reply({"error": error, "problems": []}, exc.status)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:  # a bug: logged with its traceback, answered without it
        log.exception("http.error", method=request.method, path=request.path)
        return reply({"error": "internal error (see the daemon's log)", "problems": []}, 500)


_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


@web.middleware
async def _loopback_host(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """On a loopback bind (reads open), only a loopback ``Host`` is served: a web page whose
    name an attacker re-points at 127.0.0.1 (DNS rebinding) gets nothing."""
    if not request.app[API].reads_need_token:
        try:
            host = request.url.host
        except ValueError:
            host = None
        names = _LOOPBACK_NAMES | {request.app[API].settings.http_host.lower().strip("[]")}
        if host is None or host.lower().strip("[]") not in names:
            raise ApiError(
                421,
                "this server answers only to a loopback host name (127.0.0.1, localhost or "
                f"[::1]), not {request.host!r}",
            )
    return await handler(request)


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """``POST`` needs the token always; reads need it on a bind other than loopback, except
    ``/healthz`` and the page's own files."""
    api = request.app[API]
    safe = request.method in _SAFE_METHODS
    if not safe or (api.reads_need_token and not _open(request)):
        if api.token is None:
            raise ApiError(
                403,
                "this endpoint needs an API token, and none is configured: set api_token_file "
                "(or the WFE_API_TOKEN environment variable) and restart the daemon",
            )
        if not _token_matches(request, api.token):
            raise ApiError(
                401,
                "missing or wrong API token: send the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="wfe-daemon"'},
            )
    return await handler(request)


def _open(request: web.Request) -> bool:
    """Whether the request reads a path open on any bind (matched by its route, which
    sees the path as the router does)."""
    if request.path in _OPEN_PATHS:
        return True
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in _PAGE_ROUTES


def _token_matches(request: web.Request, token: bytes) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Header bytes that are not UTF-8 arrive as surrogates: kept as bytes, never an error.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Set on every response, streamed ones and errors included, before it is sent."""
    response.headers.update(_SECURITY_HEADERS)
    if request.path.startswith("/api/") or request.path in ("/metrics", "/healthz"):
        response.headers.setdefault("Cache-Control", "no-store")


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[API].telemetry.metrics_text()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def _healthz(request: web.Request) -> web.Response:
    ok, body = request.app[API].telemetry.health.report()
    return reply(body, 200 if ok else 503)


def _own_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/metrics", _metrics)
    router.add_get("/healthz", _healthz)


def build_app(api: Api, parts: Iterable[Route] = ()) -> web.Application:
    """The application: middlewares, the security headers and every part's routes."""
    app = web.Application(
        middlewares=[_errors, _loopback_host, _auth],
        client_max_size=api.settings.max_file_size,
        handler_args={"keepalive_timeout": KEEPALIVE_S},
    )
    app[API] = api
    app.on_response_prepare.append(_security_headers)
    _own_routes(app.router)
    for add in parts:
        add(app.router)
    return app
