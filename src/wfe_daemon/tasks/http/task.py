"""``http_get``: one GET through the process's shared HTTP client, guarded and bounded.

The client is opened once per process by :func:`open_http_client` (or on the first request
that needs it, :func:`http_client_on_demand`: ``execute`` and ``retry``) and handed to tasks
as ``ctx.services.http``. It is an ``httpx.AsyncClient`` over the package's own
transport on aiohttp's connection pool (about 10 times the rate of httpcore's pool at 100
concurrent requests, and less CPU per request than the ``httpx-aiohttp`` transport, see
``benchmarks/http.py``), with ``trust_env=False`` so proxy variables cannot route around
the checks, and a cookie store that never keeps a cookie.

Safety: link-local and cloud-metadata addresses are always refused, and
``http_deny_networks`` refuses more. The check runs on the address actually connected to:
the pool's DNS resolver checks every address a name resolves to and the connection goes
to those checked addresses only (no DNS-rebinding gap); IP literals, including legacy
spellings such as ``http://2852039166/``, are checked before any request. Redirects are
followed by the task, one checked hop at a time. (The policy, the checking resolver and
the literal-address parser live in :mod:`wfe_daemon.tasks.http.netguard`.)

Limits: ``timeout`` is a deadline for the whole request (redirects and body included),
and ``max_bytes`` counts decoded bytes as they stream, so a gzip bomb fails early. (The
requests carry no per-operation timeouts of their own: the deadline already bounds them.) A body
saved with ``save_to`` is written and fsynced in worker threads, a batch of chunks at a
time (:mod:`wfe_daemon.tasks.http.body`); the event loop never waits on the disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Final

from wfe_daemon.runtime.task import Output, Params, TaskContext
from wfe_daemon.tasks.http.exchange import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_BYTES_SAVED,
    DEFAULT_TIMEOUT_S,
    exchange,
)
from wfe_daemon.tasks.http.netguard import (
    AddressPolicy,
    AddressRefused,
    CheckingResolver,
    guarded_transport_class,
    literal_address,
    remember_policy,
)

if TYPE_CHECKING:
    import httpx

    from wfe_daemon.config import Settings

__all__ = [
    "AddressPolicy",
    "AddressRefused",
    "HttpGetTask",
    "http_client_on_demand",
    "literal_address",
    "open_http_client",
]

URL_PATTERN: Final = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
"""What a literal ``url`` must start with: http or https in any case, then a host."""


@asynccontextmanager
async def open_http_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Open the process's one HTTP client; close its connections on exit.

    The daemon and ``wfe-daemon execute`` open it once and pass it to the engine as
    ``services=Services(http=client)``. It pools keep-alive connections (up to
    ``max_concurrent_tasks``), ignores proxy and certificate environment variables
    (``trust_env=False``), never follows redirects itself (``http_get`` checks each hop),
    keeps no cookies between requests, and refuses link-local/metadata addresses and the
    ``http_deny_networks`` on the resolved address it connects to.

    Raises:
        ValueError: a network of ``settings.http_deny_networks`` is malformed (settings
            loaded by ``load_settings`` are already checked).
    """
    async with _new_client(settings) as client:
        yield client


@asynccontextmanager
async def http_client_on_demand(
    settings: Settings,
) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """:func:`open_http_client`, opened on first use: yields the function that returns the
    client, building it on its first call; a client it built is closed on exit.

    For ``Services(open_http=...)``: a process whose tasks never make a request never
    imports httpx and aiohttp nor builds an SSL context (a quarter of a second or more).
    """
    built: list[httpx.AsyncClient] = []

    def client() -> httpx.AsyncClient:
        if not built:
            built.append(_new_client(settings))
        return built[0]

    try:
        yield client
    finally:
        if built:
            await built[0].aclose()


def _new_client(settings: Settings) -> httpx.AsyncClient:
    """The client :func:`open_http_client` describes, not yet opened (called on the loop)."""
    import aiohttp
    import httpx

    policy = AddressPolicy.from_settings(settings.http_deny_networks)
    connector = aiohttp.TCPConnector(
        limit=settings.max_concurrent_tasks,
        keepalive_timeout=15.0,
        resolver=CheckingResolver(policy),  # type: ignore[arg-type]
        ssl=httpx.create_ssl_context(trust_env=False),
    )
    session = aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    transport = guarded_transport_class()(session, policy)
    # No cookie store on either layer: one workflow's cookies must not reach another's.
    client = _client_class()(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=DEFAULT_TIMEOUT_S,
        headers={"Accept-Encoding": "gzip, deflate"},
    )
    remember_policy(client, policy)
    return client


@lru_cache(maxsize=1)
def _client_class() -> type[httpx.AsyncClient]:
    """``httpx.AsyncClient`` whose cookie store never stores (built on first use).

    httpx hands every response to the client's cookie store, which builds a
    ``urllib`` request to parse ``Set-Cookie`` into a jar that then refuses it all: a
    tenth of the client's CPU per request, for nothing. A cookie passed with one request
    (``cookies=``) is still sent with it.
    """
    import http.cookiejar

    import httpx

    class _Refusing(http.cookiejar.CookieJar):
        """A jar nothing gets into, whichever way it is offered."""

        def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
            return None

        def extract_cookies(self, response: Any, request: Any) -> None:
            return None

    class _NoCookies(httpx.Cookies):
        def extract_cookies(self, response: httpx.Response) -> None:
            return None  # before httpx builds the urllib request the jar would refuse

    class _Client(httpx.AsyncClient):
        _no_cookies: Final = _NoCookies(_Refusing())

        @property
        def cookies(self) -> httpx.Cookies:
            return self._no_cookies

        @cookies.setter
        def cookies(self, cookies: Any) -> None:
            return None  # nothing is kept

    return _Client


# -- the task -------------------------------------------------------------------------------


class HttpGetTask:
    """GET a URL over http or https; return the body as text (and JSON) or save it to a file."""

    type: ClassVar[str] = "http_get"
    display_name: ClassVar[str] = "HTTP GET"
    description: ClassVar[str] = (
        "Fetches a URL with GET (http and https only; redirects followed up to 10 hops, each"
        " checked; a hop to another origin drops secret-looking headers). Returns status_code,"
        " headers, elapsed and bytes, plus path when the body is saved (save_to), else text,"
        " and json when the body is JSON. Fails on an unexpected"
        " status, a connection error, the timeout, a body over max_bytes, a non-http scheme,"
        " or a link-local/metadata address (or one in http_deny_networks)."
    )
    category: ClassVar[str] = "network"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "format": "uri",
                "pattern": URL_PATTERN,
                "errorMessage": "must be an http:// or https:// URL",
                "description": "The http:// or https:// URL to fetch (any other scheme is"
                " rejected with the file; a {{ reference }} is checked once resolved).",
            },
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "default": {},
                "description": "Request headers. Values of secret-named headers (Authorization,"
                " X-Api-Key...) are shown as *** in logs, summaries and the database.",
            },
            "query": {
                "type": "object",
                "additionalProperties": {
                    "anyOf": [
                        {"type": ["string", "number", "boolean"]},
                        {"type": "array", "items": {"type": ["string", "number", "boolean"]}},
                    ]
                },
                "default": {},
                "description": "Query parameters appended to the URL's own query (which is"
                " kept as written); a list repeats the name.",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": DEFAULT_TIMEOUT_S,
                "description": "Seconds for the whole request: connection, redirects and the"
                " entire body (a server trickling bytes still fails at this deadline).",
            },
            "expect_status": {
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "minItems": 1,
                "uniqueItems": True,
                "description": "Status codes that count as success; default any 2xx.",
            },
            "save_to": {
                "type": "string",
                "minLength": 1,
                "description": "Stream the body to this file, relative to data_dir, written"
                " atomically; the output then has path instead of text.",
            },
            "max_bytes": {
                "type": "integer",
                "minimum": 0,
                "description": "Most bytes of decoded body accepted (checked while streaming,"
                f" so a compressed bomb fails early); default {DEFAULT_MAX_BYTES} in memory,"
                f" {DEFAULT_MAX_BYTES_SAVED} with save_to.",
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = 60.0
    uses_http: ClassVar[bool] = True
    """``ctx.services.http`` is opened before the timeout starts (``Services.open_now``)."""

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        return await exchange("GET", params, ctx)


TASKS = (HttpGetTask,)
