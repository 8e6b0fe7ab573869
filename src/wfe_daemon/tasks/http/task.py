"""``http_get``: one GET through the process's shared HTTP client, guarded and bounded.

The client is opened once per process by :func:`open_http_client` and handed to tasks as
``ctx.services.http``. It is an ``httpx.AsyncClient`` over the package's own
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

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Final

from wfe_daemon.core.model import is_secret_key
from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.task import Output, Params, TaskContext
from wfe_daemon.tasks._paths import WriteFailed
from wfe_daemon.tasks.http.body import MISSING, decoded, json_or_missing, save
from wfe_daemon.tasks.http.netguard import (
    AddressPolicy,
    AddressRefused,
    CheckingResolver,
    check_target,
    check_url,
    guarded_transport_class,
    literal_address,
    remember_policy,
)

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from wfe_daemon.config import Settings

__all__ = ["AddressPolicy", "AddressRefused", "HttpGetTask", "literal_address", "open_http_client"]

MAX_REDIRECTS: Final = 10
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
"""Bodies kept in memory (returned as ``text``) stop here unless ``max_bytes`` says more."""
DEFAULT_MAX_BYTES_SAVED: Final = 1024 * 1024 * 1024
"""Bodies streamed to ``save_to`` stop here unless ``max_bytes`` says more."""
URL_PATTERN: Final = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
"""What a literal ``url`` must start with: http or https in any case, then a host."""
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


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
    import aiohttp
    import httpx

    policy = AddressPolicy.from_settings(settings.http_deny_networks)
    limit = settings.max_concurrent_tasks
    connector = aiohttp.TCPConnector(
        limit=limit,
        keepalive_timeout=15.0,
        resolver=CheckingResolver(policy),  # type: ignore[arg-type]
        ssl=httpx.create_ssl_context(trust_env=False),
    )
    session = aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    transport = guarded_transport_class()(session, policy)
    # No cookie store on either layer: one workflow's cookies must not reach another's.
    async with _client_class()(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=DEFAULT_TIMEOUT_S,
        headers={"Accept-Encoding": "gzip, deflate"},
    ) as client:
        remember_policy(client, policy)
        yield client


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
        " checked). Returns status_code, headers, elapsed and bytes, plus path when the body is"
        " saved (save_to), else text, and json when the body is JSON. Fails on an unexpected"
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

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        client = ctx.services.http
        if client is None:
            raise TaskFailed(
                "http_get: no HTTP client: the engine was built without"
                " services=Services(http=...) (see open_http_client)"
            )
        url = params["url"]
        timeout_s = float(params.get("timeout", DEFAULT_TIMEOUT_S))
        target = ctx.path(params["save_to"], param="save_to") if "save_to" in params else None
        limit = params.get("max_bytes")
        if limit is None:
            limit = DEFAULT_MAX_BYTES if target is None else DEFAULT_MAX_BYTES_SAVED
        fetch = _Fetch(client, url, params, timeout_s, limit, target)
        try:
            with ctx.timeout(timeout_s):
                output = await fetch.run()
        except TimeoutError as exc:  # our deadline, or a per-read timeout below it
            raise TaskFailed(f"GET {url} timed out after {timeout_s:g}s") from exc
        if target is not None:
            output["path"] = params["save_to"]
        return output


class _Fetch:
    """One ``http_get`` attempt: hops, status check, bounded body."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        params: Params,
        timeout_s: float,
        limit: int,
        target: Path | None,
    ) -> None:
        self.client, self.url, self.params = client, url, params
        self.timeout_s, self.limit, self.target = timeout_s, limit, target
        self.expect: Sequence[int] | None = params.get("expect_status")

    async def run(self) -> dict[str, Any]:
        import httpx

        started = time.perf_counter()
        url = self.url
        try:
            request = self._first_request()
            for hop in range(MAX_REDIRECTS + 1):
                url = str(request.url)
                # Before any connection; the transport checks again, on what aiohttp gets.
                target = request.url
                check_target(self.url if hop == 0 else url, target.scheme, target.host, self.client)
                response = await self.client.send(request, stream=True)
                try:
                    follow = response.next_request
                    if response.status_code in _REDIRECTS and follow is not None:
                        # httpx strips Authorization across origins and fixes Host; rebuilt
                        # without a body stream, which the aiohttp transport would send.
                        request = httpx.Request(
                            "GET", follow.url, headers=follow.headers, extensions=follow.extensions
                        )
                        continue
                    self._check_status(response, url)
                    return await self._read(response, url, started)
                finally:
                    await response.aclose()
            raise TaskFailed(f"GET {self.url}: more than {MAX_REDIRECTS} redirects")
        except AddressRefused as exc:
            raise TaskFailed(f"GET {url}: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise TaskFailed(f"GET {url}: invalid URL: {exc}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise TaskFailed(f"GET {url}: only http and https URLs are allowed") from exc
        except (httpx.TransportError, OSError) as exc:
            raise TaskFailed(f"GET {url}: {_describe(exc, self.timeout_s)}") from exc

    def _first_request(self) -> httpx.Request:
        import httpx

        try:
            url = httpx.URL(self.url)
            if query := self.params.get("query"):
                # Appended as given: the URL's own query keeps its exact bytes (a signed URL
                # stays valid), where build_request's params= would replace it.
                extra = str(httpx.QueryParams(query)).encode()
                url = url.copy_with(query=url.query + b"&" + extra if url.query else extra)
            return self.client.build_request(
                "GET",
                url,
                headers=self.params.get("headers"),
                # execute's deadline bounds the whole request (every hop, every read), so
                # per-operation timeouts of the same length would only add timers.
                timeout=None,
            )
        except httpx.InvalidURL:
            # httpx refuses some legacy address spellings (0251.0376.0251.0376) as invalid:
            # a denied address says so rather than "invalid URL".
            check_url(self.url, self.client)
            raise
        except (TypeError, ValueError) as exc:  # httpx.InvalidURL is not one of these
            raise TaskFailed(f"GET {self.url}: invalid request: {exc}") from exc

    def _check_status(self, response: httpx.Response, url: str) -> None:
        code = response.status_code
        if self.expect is None:
            if not 200 <= code <= 299:
                raise TaskFailed(f"expected 2xx, got {code} from {url}")
        elif code not in self.expect:
            wanted = ", ".join(str(c) for c in self.expect)
            raise TaskFailed(f"expected {wanted}, got {code} from {url}")

    async def _read(self, response: httpx.Response, url: str, started: float) -> dict[str, Any]:
        headers = _shown_headers(response.headers)  # one pass: httpx's lookups cost more
        chunks = decoded(response, headers.get("content-encoding", ""), self.limit, url)
        if self.target is not None:
            try:
                size = await save(chunks, self.target, self.params["save_to"])
            except WriteFailed as exc:  # the request went well: say so
                code = response.status_code
                raise WriteFailed(f"GET {url} answered {code}, but {exc}") from exc
        else:
            body = bytearray()
            async for chunk in chunks:
                body += chunk
            size = len(body)
        output: dict[str, Any] = {
            "status_code": response.status_code,
            "headers": headers,
            "elapsed": round(time.perf_counter() - started, 6),
            "bytes": size,
        }
        if self.target is None:
            content_type = headers.get("content-type", "")
            charset = response.charset_encoding if "charset" in content_type.lower() else None
            text = bytes(body).decode(charset or "utf-8", errors="replace")
            output["text"] = text
            parsed = json_or_missing(text, content_type)
            if parsed is not MISSING:
                output["json"] = parsed
        return output


def _shown_headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers by lower-case name; secret-looking ones and cookies as ``***``."""
    shown: dict[str, str] = {}
    for name, value in headers.multi_items():  # names lower-cased
        if is_secret_key(name) or name in ("set-cookie", "cookie"):
            shown[name] = "***"
        elif name in shown:
            shown[name] += ", " + value
        else:
            shown[name] = value
    return shown


def _describe(exc: BaseException, timeout_s: float) -> str:
    """A transport error in a user's words, from the innermost cause that says most."""
    import socket

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in chain:
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return f"cannot resolve host: {error.strerror or error}"
    for error in chain:
        if isinstance(error, TimeoutError) or type(error).__name__ in (
            "ReadTimeout",
            "ServerTimeoutError",
            "SocketTimeoutError",
        ):
            return f"timed out after {timeout_s:g}s"
    for error in reversed(chain):
        if isinstance(error, OSError) and error.strerror:
            return f"connection failed: {error.strerror}"
    message = str(chain[-1]) or type(chain[-1]).__name__
    return f"connection failed: {message}"


TASKS = (HttpGetTask,)
