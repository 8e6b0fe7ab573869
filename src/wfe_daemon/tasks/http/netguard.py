"""The address policy of ``http_get``: what it never connects to, checked where it connects.

Link-local and cloud-metadata addresses are always refused; ``http_deny_networks`` refuses
more. :class:`CheckingResolver` checks every address a name resolves to (the connector
then connects to those addresses only, so there is no DNS-rebinding gap), and the guarded
transport checks IP literals, legacy spellings such as ``2852039166`` included.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from wfe_daemon.errors import TaskFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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
                denied.append(
                    (ipaddress.ip_network(entry, strict=False), f"in {entry} (http_deny_networks)")
                )
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


# -- where the client connects ----------------------------------------------------------------


class CheckingResolver:
    """aiohttp's resolver, refusing a name when any address it resolves to is denied.

    The connector connects only to the addresses returned here, so what is checked is
    what is connected to. (IP literals skip the resolver: the guarded transport
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


@lru_cache(maxsize=1)
def _error_map() -> tuple[tuple[type[BaseException], type[Exception]], ...]:
    """aiohttp's errors and the httpx errors they become; first match wins."""
    import aiohttp
    import httpx

    return (  # subclasses before their bases
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
        (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
        (aiohttp.ClientConnectorError, httpx.ConnectError),
        (aiohttp.ClientPayloadError, httpx.ReadError),
        (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
        (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
        (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
        (aiohttp.ClientConnectionError, httpx.NetworkError),
        (aiohttp.ClientError, httpx.TransportError),
    )


def _as_httpx_error(exc: BaseException) -> BaseException:
    """The httpx error an aiohttp error stands for (raised ``from`` it); others as they are."""
    for aiohttp_error, httpx_error in _error_map():
        if isinstance(exc, aiohttp_error):
            return httpx_error(str(exc) or type(exc).__name__)
    return exc


@lru_cache(maxsize=1)
def _body_class() -> type[Any]:
    import aiohttp
    import httpx

    class _Body(httpx.AsyncByteStream):
        """The raw (still encoded) body as aiohttp reads it; closing frees the connection."""

        __slots__ = ("_response",)

        def __init__(self, response: aiohttp.ClientResponse) -> None:
            self._response = response

        async def __aiter__(self) -> AsyncIterator[bytes]:
            content = self._response.content
            try:
                while chunk := await content.readany():
                    yield chunk
            except aiohttp.ClientError as exc:
                raise _as_httpx_error(exc) from exc

        async def aclose(self) -> None:
            # Back to the pool when the body was read to its end, else the connection closes.
            self._response.release()
            await self._response.wait_for_close()

    return _Body


@lru_cache(maxsize=64)
def _client_timeout(
    connect: float | None = None,
    read: float | None = None,
    write: float | None = None,
    pool: float | None = None,
) -> Any:
    """httpx's per-operation timeouts in aiohttp's terms (no total: the caller's deadline).

    aiohttp has no write timeout. Cached: one object per distinct set, not per request.
    """
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read, connect=pool)


def _outgoing(request: Any) -> tuple[list[tuple[str, str]], Any]:
    """The headers and body of an ``httpx.Request`` as aiohttp takes them."""
    import httpx

    headers: httpx.Headers = request.headers
    if not isinstance(request.stream, httpx.ByteStream):  # a streamed upload
        headers = headers.copy()
        headers.pop("transfer-encoding", None)  # aiohttp chunks it itself
        return headers.multi_items(), request.stream
    return headers.multi_items(), b"".join(request.stream) or None  # bytes held in memory


def _response_extensions(response: Any) -> dict[str, Any]:
    version = response.version or (1, 1)
    extensions = {"http_version": b"HTTP/%d.%d" % (version[0], version[1])}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode()
    return extensions


@lru_cache(maxsize=1)
def guarded_transport_class() -> type[Any]:
    """The ``httpx`` transport of :func:`~wfe_daemon.tasks.http.task.open_http_client`.

    One layer between ``httpx.AsyncClient`` and aiohttp's pool (it replaces the
    ``httpx-aiohttp`` transport and the guard that wrapped it: the same work in less
    CPU per request, see ``benchmarks/http.py``). It refuses non-http schemes and denied
    IP literals, checked on the host aiohttp is given (names go through
    :class:`CheckingResolver`), and maps aiohttp's errors to httpx's. Built on first use,
    so that importing the task modules imports neither httpx nor aiohttp.
    """
    import aiohttp
    import httpx
    from yarl import URL

    body_class = _body_class()

    class _GuardedTransport(httpx.AsyncBaseTransport):
        """Checks a request's scheme and literal address, then sends it with aiohttp."""

        def __init__(self, session: aiohttp.ClientSession, policy: AddressPolicy) -> None:
            self._session = session
            self._policy = policy

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            scheme = request.url.scheme
            if scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol(f"scheme {scheme!r} is not http")
            # Exactly the URL httpx encoded (aiohttp must not re-quote it), and the host
            # checked is the one aiohttp connects to (IP literals skip the resolver).
            url = URL(str(request.url), encoded=True)
            if url.raw_user is not None:  # httpx sent it as Authorization: Basic already
                url = url.with_user(None)
            host = url.raw_host or ""
            address = literal_address(host)
            if address is not None:
                self._policy.check(host, address)
            headers, body = _outgoing(request)
            extensions = request.extensions
            try:
                response = await self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    auto_decompress=False,
                    timeout=_client_timeout(**extensions.get("timeout", {})),
                    server_hostname=extensions.get("sni_hostname"),
                )
            except aiohttp.ClientError as exc:
                raise _as_httpx_error(exc) from exc
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                stream=body_class(response),
                request=request,
                extensions=_response_extensions(response),
            )

        async def aclose(self) -> None:
            await self._session.close()

    return _GuardedTransport


def check_url(url: str, client: Any, method: str = "GET") -> None:
    """Refuse a non-http scheme or a denied IP literal before any connection is tried."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise TaskFailed(f"{method} {url}: invalid URL: {exc}") from exc
    check_target(url, parts.scheme, host, client, method)


def check_target(url: str, scheme: str, host: str | None, client: Any, method: str = "GET") -> None:
    """:func:`check_url` on a URL already split (``httpx.URL``: no second parse)."""
    if scheme.lower() not in ("http", "https"):
        shown = f"{scheme!r}" if scheme else "none"
        raise TaskFailed(f"{method} {url}: only http and https URLs are allowed, scheme is {shown}")
    if not host:
        raise TaskFailed(f"{method} {url}: invalid URL: no host")
    address = literal_address(host)
    if address is not None:
        policy_of(client).check(host, address)


def remember_policy(client: Any, policy: AddressPolicy) -> None:
    """Record the policy a client was opened with, for :func:`check_url`."""
    _POLICIES[client] = policy


def policy_of(client: Any) -> AddressPolicy:
    """The policy ``client`` was opened with, else the always-denied one."""
    try:
        return _POLICIES.get(client, _DEFAULT_POLICY)
    except TypeError:  # not weak-referenceable: not ours
        return _DEFAULT_POLICY


_DEFAULT_POLICY: Final = AddressPolicy.from_settings()
_POLICIES: Final[weakref.WeakKeyDictionary[Any, AddressPolicy]] = weakref.WeakKeyDictionary()
