"""The address policy of ``http_get``: what it never connects to, checked where it connects.

Link-local and cloud-metadata addresses are always refused; ``http_deny_networks`` refuses
more. :class:`CheckingResolver` checks every address a name resolves to (the connector
then connects to those addresses only, so there is no DNS-rebinding gap), and the guarded
transport checks IP literals, legacy spellings such as ``2852039166`` included.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Iterator, Mapping, Sequence
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


def guarded_transport_class() -> type[Any]:
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


def check_url(url: str, client: Any) -> None:
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
