"""One request and its response, as ``http_get`` and ``http_post`` make them.

:func:`exchange` runs one attempt through the shared client: the address checks at every
hop (:mod:`wfe_daemon.tasks.http.netguard`), the redirect policy, the status check, the
whole-request deadline and the bounded body (:mod:`wfe_daemon.tasks.http.body`). Errors
name the method and the URL (``POST http://...: connection refused``).

Redirects: up to :data:`MAX_REDIRECTS` hops, each checked. A 301, 302 or 303 answer is
followed with a GET without a body, whatever the method was (what browsers do). A 307 or
308 keeps the method and sends the same body again, but only to the same origin (scheme,
host and port): one to another origin is refused unless the method is GET, so a body never
goes to a host the workflow did not name, nor from https to http. A hop to another origin
carries none of the headers whose names look secret (:func:`is_secret_key`:
``Authorization``, ``X-Api-Key``, ``X-Auth-Token``...) nor cookies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wfe_daemon.core.model import is_secret_key
from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.task import Params, TaskContext
from wfe_daemon.tasks._paths import WriteFailed
from wfe_daemon.tasks.http.body import MISSING, decoded, json_or_missing, save
from wfe_daemon.tasks.http.netguard import AddressRefused, check_target, check_url

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_BYTES_SAVED",
    "DEFAULT_TIMEOUT_S",
    "MAX_REDIRECTS",
    "Body",
    "describe_error",
    "exchange",
]

MAX_REDIRECTS: Final = 10
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
"""Bodies kept in memory (returned as ``text``) stop here unless ``max_bytes`` says more."""
DEFAULT_MAX_BYTES_SAVED: Final = 1024 * 1024 * 1024
"""Bodies streamed to ``save_to`` stop here unless ``max_bytes`` says more."""
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})

Body = tuple[bytes, str] | None
"""A request body and its Content-Type (used unless the headers name one), or none."""


async def exchange(method: str, params: Params, ctx: TaskContext, body: Body = None) -> Any:
    """Send ``method`` to ``params["url"]`` with ``body``; the task's output.

    ``params`` are those ``http_get`` and ``http_post`` share: ``url``, ``headers``,
    ``query``, ``timeout``, ``expect_status``, ``save_to`` and ``max_bytes``.

    Raises:
        TaskFailed: the address is refused, the request fails or times out, the status
            is not expected, or the body is over ``max_bytes``; the message starts with
            the method and the URL.
    """
    client = ctx.services.http
    if client is None:
        raise TaskFailed(
            f"http_{method.lower()}: no HTTP client: the engine was built without"
            " services=Services(http=...) (see open_http_client)"
        )
    url = params["url"]
    timeout_s = float(params.get("timeout", DEFAULT_TIMEOUT_S))
    target = ctx.path(params["save_to"], param="save_to") if "save_to" in params else None
    limit = params.get("max_bytes")
    if limit is None:
        limit = DEFAULT_MAX_BYTES if target is None else DEFAULT_MAX_BYTES_SAVED
    attempt = _Exchange(client, method, url, params, timeout_s, limit, target, body)
    try:
        with ctx.timeout(timeout_s):
            output = await attempt.run()
    except TimeoutError as exc:  # our deadline, or a per-read timeout below it
        raise TaskFailed(f"{method} {url} timed out after {timeout_s:g}s") from exc
    if target is not None:
        output["path"] = params["save_to"]
    return output


class _Exchange:
    """One attempt: hops, status check, bounded body."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        params: Params,
        timeout_s: float,
        limit: int,
        target: Path | None,
        body: Body,
    ) -> None:
        self.client, self.method, self.url, self.params = client, method, url, params
        self.timeout_s, self.limit, self.target, self.body = timeout_s, limit, target, body
        self.expect: Sequence[int] | None = params.get("expect_status")

    async def run(self) -> dict[str, Any]:
        import httpx

        started = time.perf_counter()
        method, url = self.method, self.url
        try:
            request = self._first_request()
            for hop in range(MAX_REDIRECTS + 1):
                method, url = request.method, str(request.url)
                # Before any connection; the transport checks again, on what aiohttp gets.
                target = request.url
                check_target(
                    self.url if hop == 0 else url, target.scheme, target.host, self.client, method
                )
                response = await self.client.send(request, stream=True)
                try:
                    follow = response.next_request
                    if response.status_code in _REDIRECTS and follow is not None:
                        request = self._redirected(response, follow)
                        continue
                    self._check_status(response, url)
                    return await self._read(response, method, url, started)
                finally:
                    await response.aclose()
            raise TaskFailed(f"{self.method} {self.url}: more than {MAX_REDIRECTS} redirects")
        except AddressRefused as exc:
            raise TaskFailed(f"{method} {url}: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise TaskFailed(f"{method} {url}: invalid URL: {exc}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise TaskFailed(f"{method} {url}: only http and https URLs are allowed") from exc
        except (httpx.TransportError, OSError) as exc:
            raise TaskFailed(f"{method} {url}: {describe_error(exc, self.timeout_s)}") from exc

    def _redirected(self, response: httpx.Response, follow: httpx.Request) -> httpx.Request:
        """The next hop after ``response``, from httpx's ``follow`` (its URL, Host header).

        A 301, 302 or 303 becomes a GET without a body for every method (httpx keeps a PUT
        or PATCH on a 301). A 307 or 308 keeps the method and the body, and is refused
        across origins unless it is a GET. Across origins the secret-looking headers are
        dropped (httpx drops only Authorization, and keeps it on an http to https hop).

        Raises:
            TaskFailed: a 307 or 308 of a request other than GET leads to another origin.
        """
        import httpx

        before = response.request
        code = response.status_code
        keep = code in (307, 308)
        method = before.method if keep else "GET"
        headers = follow.headers.copy()
        if _origin(follow.url) != _origin(before.url):
            if keep and method != "GET":
                raise TaskFailed(
                    f"{method} {before.url}: answered {code} to {_shown_origin(follow.url)},"
                    f" another origin: not followed, so the request and its body go only"
                    f" where the workflow says"
                )
            for name in [name for name in headers if is_secret_key(name)]:
                del headers[name]
        content = None
        if keep:
            content = self.body[0] if self.body is not None else None
        else:  # the body is dropped: so is what described it
            for name in ("content-type", "content-length", "transfer-encoding"):
                headers.pop(name, None)
        return httpx.Request(
            method, follow.url, headers=headers, content=content, extensions=follow.extensions
        )

    def _first_request(self) -> httpx.Request:
        import httpx

        try:
            url = httpx.URL(self.url)
            if query := self.params.get("query"):
                # Appended as given: the URL's own query keeps its exact bytes (a signed URL
                # stays valid), where build_request's params= would replace it.
                extra = str(httpx.QueryParams(query)).encode()
                url = url.copy_with(query=url.query + b"&" + extra if url.query else extra)
            headers = httpx.Headers(self.params.get("headers"))
            content = None
            if self.body is not None:
                content = self.body[0]
                headers.setdefault("Content-Type", self.body[1])
            return self.client.build_request(
                self.method,
                url,
                headers=headers,
                content=content,
                # exchange's deadline bounds the whole request (every hop, every read), so
                # per-operation timeouts of the same length would only add timers.
                timeout=None,
            )
        except httpx.InvalidURL:
            # httpx refuses some legacy address spellings (0251.0376.0251.0376) as invalid:
            # a denied address says so rather than "invalid URL".
            check_url(self.url, self.client, self.method)
            raise
        except (TypeError, ValueError) as exc:  # httpx.InvalidURL is not one of these
            raise TaskFailed(f"{self.method} {self.url}: invalid request: {exc}") from exc

    def _check_status(self, response: httpx.Response, url: str) -> None:
        code = response.status_code
        if self.expect is None:
            if not 200 <= code <= 299:
                raise TaskFailed(f"expected 2xx, got {code} from {url}")
        elif code not in self.expect:
            wanted = ", ".join(str(c) for c in self.expect)
            raise TaskFailed(f"expected {wanted}, got {code} from {url}")

    async def _read(
        self, response: httpx.Response, method: str, url: str, started: float
    ) -> dict[str, Any]:
        headers = _shown_headers(response.headers)  # one pass: httpx's lookups cost more
        encoding = headers.get("content-encoding", "")
        chunks = decoded(response, encoding, self.limit, url, method)
        if self.target is not None:
            try:
                size = await save(chunks, self.target, self.params["save_to"])
            except WriteFailed as exc:  # the request went well: say so
                code = response.status_code
                raise WriteFailed(f"{method} {url} answered {code}, but {exc}") from exc
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


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default when not written) of ``url``."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


def _shown_origin(url: httpx.URL) -> str:
    """``scheme://host[:port]`` of ``url``: its path or query may hold a token."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "")


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


def describe_error(exc: BaseException, timeout_s: float) -> str:
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
