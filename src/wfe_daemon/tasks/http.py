"""``http_get``: one GET through the process's shared HTTP client, guarded and bounded.

The client is opened once per process by :func:`open_http_client` and handed to tasks as
``ctx.services["http"]``. It is an ``httpx.AsyncClient`` over the ``httpx-aiohttp``
transport (aiohttp's connection pool: about 10 times the rate of httpcore's pool at 100
concurrent requests, see ``benchmarks/http.py``), with ``trust_env=False`` so proxy
variables cannot route around the checks, and no cookie jar shared between workflows.

Safety: link-local and cloud-metadata addresses are always refused, and
``http_deny_networks`` refuses more. The check runs on the address actually connected to:
the pool's DNS resolver checks every address a name resolves to and the connection goes
to those checked addresses only (no DNS-rebinding gap); IP literals, including legacy
spellings such as ``http://2852039166/``, are checked before any request. Redirects are
followed by the task, one checked hop at a time.

Limits: ``timeout`` is a deadline for the whole request (redirects and body included),
and ``max_bytes`` counts decoded bytes as they stream, so a gzip bomb fails early.
"""

from __future__ import annotations

import ipaddress
import json
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Final

from wfe_daemon.errors import TaskFailed
from wfe_daemon.model import is_secret_key
from wfe_daemon.registry import Output, Params, TaskContext

if TYPE_CHECKING:
    import httpx

    from wfe_daemon.config import Settings

__all__ = ["AddressPolicy", "AddressRefused", "HttpGetTask", "open_http_client"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS: Final = 10
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
"""Bodies kept in memory (returned as ``text``) stop here unless ``max_bytes`` says more."""
DEFAULT_MAX_BYTES_SAVED: Final = 1024 * 1024 * 1024
"""Bodies streamed to ``save_to`` stop here unless ``max_bytes`` says more."""
_DECODE_STEP: Final = 1024 * 1024
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})

_ALWAYS_DENIED: Final = ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128")
_NAMED: Final[Mapping[str, tuple[str, ...]]] = {
    "loopback": ("127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"),
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
}
_NAT64: Final = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_LEGACY_IPV4_CHARS: Final = frozenset("0123456789abcdefxABCDEFX.")


class AddressRefused(TaskFailed):
    """Raised when a URL's host is, or resolves to, an address the policy refuses."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The networks ``http_get`` never connects to, each with the phrase errors use."""

    denied: tuple[tuple[IPNetwork, str], ...]
    cache: dict[IPAddress, str | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, deny: Sequence[str] = ()) -> AddressPolicy:
        """Link-local/metadata always, plus ``http_deny_networks`` (CIDRs or names)."""
        always = "a link-local/metadata address"
        denied = [(ipaddress.ip_network(n), always) for n in _ALWAYS_DENIED]
        for entry in deny:
            if entry in _NAMED:
                phrase = f"a {entry} address (http_deny_networks)"
                denied += [(ipaddress.ip_network(n), phrase) for n in _NAMED[entry]]
            else:
                denied.append((ipaddress.ip_network(entry, strict=False),
                               f"in {entry} (http_deny_networks)"))
        return cls(tuple(denied))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` (or the IPv4 address it embeds) is refused; ``None`` if allowed."""
        return _refusal(self, address)

    def check(self, host: str, address: IPAddress) -> None:
        """Raise :class:`AddressRefused` when ``address`` (what ``host`` is) is refused."""
        phrase = self.refusal(address)
        if phrase is None:
            return
        try:
            spelled_plainly = ipaddress.ip_address(host.strip("[]")) == address
        except ValueError:
            spelled_plainly = False
        if spelled_plainly:
            raise AddressRefused(f"{host} is {phrase}; refused")
        raise AddressRefused(f"{host} resolves to {address}, {phrase}; refused")


def _refusal(policy: AddressPolicy, address: IPAddress) -> str | None:
    """:meth:`AddressPolicy.refusal`, cached: the same few hosts come back on every request."""
    cache = policy.cache
    if address not in cache:
        if len(cache) >= 1024:
            cache.clear()
        cache[address] = _first_refusal(policy, address)
    return cache[address]


def _first_refusal(policy: AddressPolicy, address: IPAddress) -> str | None:
    for candidate in _unwrapped(address):
        for network, phrase in policy.denied:
            if candidate.version == network.version and candidate in network:
                return phrase if candidate == address else f"{phrase} ({candidate})"
    return None


def _unwrapped(address: IPAddress) -> Iterator[IPAddress]:
    """The address, then every IPv4 address an IPv6 form embeds (mapped, 6to4, NAT64...)."""
    yield address
    if not isinstance(address, ipaddress.IPv6Address):
        return
    address = ipaddress.IPv6Address(int(address))  # drop any %scope
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        embedded += list(address.teredo)
    if any(address in network for network in _NAT64):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        embedded.append(ipaddress.IPv4Address(int(address)))
    yield from (ip for ip in embedded if ip is not None)


@lru_cache(maxsize=1024)
def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, legacy IPv4 forms included; ``None`` for a name.

    ``2852039166``, ``0251.0376.0251.0376``, ``0xa9.0xfe.43518`` and ``169.254.169.254.``
    all spell 169.254.169.254, as the C library's ``inet_aton`` reads them.
    """
    import socket

    text = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and set(text) <= _LEGACY_IPV4_CHARS and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


# -- the shared client ----------------------------------------------------------------------


class _CheckingResolver:
    """aiohttp's resolver, refusing a name when any address it resolves to is denied.

    The connector connects only to the addresses returned here, so what is checked is
    what is connected to. (IP literals skip the resolver: :class:`_GuardedTransport`
    checks those.)
    """

    def __init__(self, policy: AddressPolicy) -> None:
        from aiohttp.resolver import DefaultResolver

        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        import socket

        results: list[Any] = await self._inner.resolve(
            host, port, family=socket.AddressFamily(family)
        )
        for result in results:
            self._policy.check(host, ipaddress.ip_address(result["host"]))
        return results

    async def close(self) -> None:
        await self._inner.close()


def _guarded_transport_class() -> type[Any]:
    import httpx

    class _GuardedTransport(httpx.AsyncBaseTransport):
        """Refuses non-http schemes and denied IP literals, then hands the request on."""

        def __init__(self, inner: httpx.AsyncBaseTransport, policy: AddressPolicy) -> None:
            self._inner = inner
            self._policy = policy

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol(f"scheme {request.url.scheme!r} is not http")
            address = literal_address(request.url.host)
            if address is not None:
                self._policy.check(request.url.host, address)
            return await self._inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self._inner.aclose()

    return _GuardedTransport


@asynccontextmanager
async def open_http_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Open the process's one HTTP client; close its connections on exit.

    The daemon and ``wfe-daemon execute`` open it once and pass it to the engine as
    ``services={"http": client}``. It pools keep-alive connections (up to
    ``max_concurrent_tasks``), ignores proxy and certificate environment variables
    (``trust_env=False``), never follows redirects itself (``http_get`` checks each hop),
    keeps no cookies between requests, and refuses link-local/metadata addresses and the
    ``http_deny_networks`` on the resolved address it connects to.

    Raises:
        ValueError: a network of ``settings.http_deny_networks`` is malformed (settings
            loaded by ``load_settings`` are already checked).
    """
    import http.cookiejar

    import aiohttp
    import httpx
    from httpx_aiohttp import AiohttpTransport

    policy = AddressPolicy.from_settings(settings.http_deny_networks)
    limit = settings.max_concurrent_tasks
    connector = aiohttp.TCPConnector(
        limit=limit,
        keepalive_timeout=15.0,
        resolver=_CheckingResolver(policy),  # type: ignore[arg-type]
        ssl=httpx.create_ssl_context(trust_env=False),
    )
    session = aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    # A jar that accepts nothing: one workflow's cookies must not reach another's requests.
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    transport = _guarded_transport_class()(AiohttpTransport(client=session), policy)
    async with httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        cookies=no_cookies,
        timeout=DEFAULT_TIMEOUT_S,
        headers={"Accept-Encoding": "gzip, deflate"},
    ) as client:
        _POLICIES[client] = policy
        yield client


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
                "minLength": 1,
                "description": "The http:// or https:// URL to fetch.",
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
                "description": "Query parameters added to the URL; a list repeats the name.",
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
        import asyncio

        client = ctx.services.get("http")
        if client is None:
            raise TaskFailed("http_get: no HTTP client: the engine was built without"
                             ' services={"http": ...} (see open_http_client)')
        url = params["url"]
        timeout_s = float(params.get("timeout", DEFAULT_TIMEOUT_S))
        target = None
        if "save_to" in params:
            from wfe_daemon.tasks._paths import data_path

            target = data_path(ctx.data_dir, params["save_to"], param="save_to")
        limit = params.get("max_bytes")
        if limit is None:
            limit = DEFAULT_MAX_BYTES if target is None else DEFAULT_MAX_BYTES_SAVED
        fetch = _Fetch(client, url, params, timeout_s, limit, target)
        try:
            async with asyncio.timeout(timeout_s):
                output = await fetch.run()
        except TimeoutError as exc:  # our deadline, or a per-read timeout below it
            raise TaskFailed(f"GET {url} timed out after {timeout_s:g}s") from exc
        if target is not None:
            output["path"] = params["save_to"]
        return output


class _Fetch:
    """One ``http_get`` attempt: hops, status check, bounded body."""

    def __init__(self, client: httpx.AsyncClient, url: str, params: Params, timeout_s: float,
                 limit: int, target: Any) -> None:
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
                if hop:  # the first URL was checked, as given, by _first_request
                    _check_url(url, self.client)
                response = await self.client.send(request, stream=True)
                try:
                    follow = response.next_request
                    if response.status_code in _REDIRECTS and follow is not None:
                        # httpx strips Authorization across origins and fixes Host; rebuilt
                        # without a body stream, which the aiohttp transport would send.
                        request = httpx.Request("GET", follow.url, headers=follow.headers,
                                                extensions=follow.extensions)
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

        _check_url(self.url, self.client)
        try:
            return self.client.build_request(
                "GET", self.url, headers=self.params.get("headers"),
                params=self.params.get("query"),
                timeout=httpx.Timeout(self.timeout_s),
            )
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
        chunks = _decoded(response, self.limit, url)
        size = 0
        body = bytearray()
        if self.target is None:
            async for chunk in chunks:
                body += chunk
        else:
            from wfe_daemon.tasks._paths import atomic_write

            with atomic_write(self.target, "wb") as file:
                async for chunk in chunks:
                    file.write(chunk)  # type: ignore[arg-type]
                    size += len(chunk)
        output: dict[str, Any] = {
            "status_code": response.status_code,
            "headers": _shown_headers(response.headers),
            "elapsed": round(time.perf_counter() - started, 6),
            "bytes": size if self.target is not None else len(body),
        }
        if self.target is None:
            text = bytes(body).decode(response.charset_encoding or "utf-8", errors="replace")
            output["text"] = text
            parsed = _json_or_missing(text, response.headers.get("content-type", ""))
            if parsed is not _MISSING:
                output["json"] = parsed
        return output


def _check_url(url: str, client: Any) -> None:
    """Refuse a non-http scheme or a denied IP literal before any connection is tried."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise TaskFailed(f"GET {url}: invalid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        raise TaskFailed(f"GET {url}: only http and https URLs are allowed, scheme is {shown}")
    if not host:
        raise TaskFailed(f"GET {url}: invalid URL: no host")
    address = literal_address(host)
    if address is not None:
        policy = _policy_of(client)
        policy.check(host, address)


def _policy_of(client: Any) -> AddressPolicy:
    """The policy :func:`open_http_client` gave ``client``, else the always-denied one."""
    try:
        return _POLICIES.get(client, _DEFAULT_POLICY)
    except TypeError:  # not weak-referenceable: not ours
        return _DEFAULT_POLICY


_DEFAULT_POLICY: Final = AddressPolicy.from_settings()
_POLICIES: Final[weakref.WeakKeyDictionary[Any, AddressPolicy]] = weakref.WeakKeyDictionary()


def _inflater(response: httpx.Response, url: str) -> Any:
    """A zlib decompressor for the body's Content-Encoding; ``None`` for identity."""
    import zlib

    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise TaskFailed(f"GET {url}: unsupported Content-Encoding {', '.join(codings)!r}")
    return zlib.decompressobj(zlib.MAX_WBITS | 16 if "gzip" in codings[0] else zlib.MAX_WBITS)


async def _decoded(response: httpx.Response, limit: int, url: str) -> AsyncIterator[bytes]:
    """The body decoded (gzip, deflate or none), failing as soon as it passes ``limit``.

    Decompression is bounded step by step (``max_length``), so a small compressed chunk
    never expands to more than ``limit + 1`` bytes in memory.
    """
    import zlib

    stream: AsyncIterator[bytes]
    if response.is_stream_consumed:  # a body given whole (mock transports): decoded already
        inflater, stream = None, _single(response.content)
    else:
        inflater, stream = _inflater(response, url), response.aiter_raw()
    total = 0
    first = "deflate" in response.headers.get("content-encoding", "").lower()
    async for raw in stream:
        data = raw
        while data:
            if inflater is None:
                chunk, data = data, b""
            else:
                try:
                    chunk = inflater.decompress(data, min(limit - total + 1, _DECODE_STEP))
                except zlib.error as exc:
                    if first:  # some servers send deflate raw, without its zlib header
                        inflater, first = zlib.decompressobj(-zlib.MAX_WBITS), False
                        continue
                    raise TaskFailed(f"GET {url}: body does not decompress: {exc}") from exc
                data = inflater.unconsumed_tail
            first = False
            total += len(chunk)
            if total > limit:
                raise TaskFailed(f"GET {url}: body is over max_bytes ({limit} bytes)")
            if chunk:
                yield chunk


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


_MISSING: Final = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_or_missing(text: str, content_type: str) -> Any:
    """The body parsed as JSON when it is JSON (declared or not), else ``_MISSING``."""
    stripped = text.lstrip()
    if "json" not in content_type.lower() and stripped[:1] not in ("{", "[", '"'):
        return _MISSING
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _MISSING


def _shown_headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers by lower-case name; secret-looking ones and cookies as ``***``."""
    shown: dict[str, str] = {}
    for name in headers:
        if is_secret_key(name) or name in ("set-cookie", "cookie"):
            shown[name] = "***"
        else:
            shown[name] = ", ".join(headers.get_list(name))
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
            "ReadTimeout", "ServerTimeoutError", "SocketTimeoutError"
        ):
            return f"timed out after {timeout_s:g}s"
    for error in reversed(chain):
        if isinstance(error, OSError) and error.strerror:
            return f"connection failed: {error.strerror}"
    message = str(chain[-1]) or type(chain[-1]).__name__
    return f"connection failed: {message}"


TASKS = (HttpGetTask,)
