"""``http_get`` and its client refuse link-local and metadata addresses, however spelt,
at the task and in the transport itself: tests that name such addresses.

These run only inside a network namespace of their own with nothing but loopback, so a
regression in the checks cannot send anything to 169.254.169.254 or the other addresses
named here: ``test_task_http.py::test_refused_addresses_run_without_a_network`` re-runs
this module under ``unshare -n``; outside it, every test here is skipped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from test_task_http import NETNS_ENV, _Server, base, error_of, get, run_nodes, server
from wfe_daemon.config import Settings
from wfe_daemon.tasks.http.netguard import AddressRefused
from wfe_daemon.tasks.http.task import open_http_client

__all__ = ["base", "run_nodes", "server"]  # fixtures shared with test_task_http

pytestmark = pytest.mark.skipif(
    os.environ.get(NETNS_ENV) != "1",
    reason="names refused addresses: runs inside a network namespace, through "
    "test_task_http.py::test_refused_addresses_run_without_a_network",
)


@pytest.fixture(autouse=True, scope="module")
def _only_loopback() -> None:
    """Refuse to run where any network interface but loopback exists."""
    interfaces = sorted(name for _, name in socket.if_nameindex())  # this namespace's
    assert interfaces == ["lo"], f"not an isolated network namespace: {interfaces}"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
    ],
)
async def test_metadata_addresses_refused_before_connecting(
    run_nodes: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Metadata and link-local addresses, however spelt, are refused without any connection."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    summary, _ = await run_nodes(get({"url": url}))
    message = error_of(summary)
    assert message.startswith(f"GET {url}: ")
    assert "a link-local/metadata address" in message
    assert message.endswith("; refused")


async def test_metadata_message_names_the_address(run_nodes: Callable[..., Any]) -> None:
    """A disguised address is named in the error as the address it spells."""
    summary, _ = await run_nodes(get({"url": "http://2852039166/"}))
    assert error_of(summary) == (
        "GET http://2852039166/: 2852039166 resolves to 169.254.169.254,"
        " a link-local/metadata address; refused"
    )


async def test_redirect_to_metadata_refused(
    base: str, run_nodes: Callable[..., Any], server: _Server
) -> None:
    """A local redirect to http://169.254.169.254/latest is refused on that hop."""
    summary, _ = await run_nodes(get({"url": f"{base}/redirect?to=http://169.254.169.254/latest"}))
    assert error_of(summary) == (
        "GET http://169.254.169.254/latest: 169.254.169.254 is a link-local/metadata address;"
        " refused"
    )
    assert [r["path"] for r in server.requests] == ["/redirect"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://[fd00:ec2::254]/"])
async def test_http_post_refuses_metadata_addresses_before_connecting(
    run_nodes: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """http_post applies http_get's checks: a metadata address is refused, nothing connects."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    node = {"id": "fetch", "type": "http_post", "params": {"url": url, "json": {"a": 1}}}
    summary, _ = await run_nodes(node)
    message = error_of(summary)
    assert message.startswith(f"POST {url}: ")
    assert message.endswith("a link-local/metadata address; refused")


# -- the transport's own check ----------------------------------------------------------------


async def test_the_transport_refuses_a_denied_literal_itself(
    base: str, server: _Server, tmp_path: Path
) -> None:
    """The client's transport refuses a denied IP literal on its own (no http_get check in
    front): the real server on 127.0.0.1 is never asked."""
    settings = Settings(data_dir=tmp_path, http_deny_networks=("loopback",))
    async with open_http_client(settings) as client:
        with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await client.get(f"{base}/json")
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",
        "http://2852039166/",
        "http://[::ffff:a9fe:a9fe]/",
    ],
)
async def test_the_transport_refuses_a_redirect_to_a_metadata_address(
    base: str, server: _Server, tmp_path: Path, url: str
) -> None:
    """A redirect followed by the client itself (no http_get check on that hop) to a
    metadata address is refused by the transport, after the real server's answer."""
    async with open_http_client(Settings(data_dir=tmp_path)) as client:
        with pytest.raises(AddressRefused, match="a link-local/metadata address"):
            await client.get(f"{base}/redirect?to={url}", follow_redirects=True)
    assert [r["path"] for r in server.requests] == ["/redirect"]


async def test_the_transport_refuses_a_metadata_literal_before_connecting(
    tmp_path: Path,
) -> None:
    """Asked directly for http://169.254.169.254/, the transport refuses it (an attempt
    would fail here as unreachable, not as refused)."""
    async with open_http_client(Settings(data_dir=tmp_path)) as client:
        with pytest.raises(AddressRefused):
            await client.get("http://169.254.169.254/latest/meta-data/")
