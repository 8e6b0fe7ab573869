"""Failure notifications: the summaries of runs that end in ``[notify] on``, POSTed to a webhook.

The daemon hands each published result to :meth:`Webhook.offer` (its ``on_published``
hook), which only queues it: the engine, the outbox and the next run never wait for the
webhook. :meth:`Webhook.run`, a task of the daemon's task group, sends the queue in order,
one notification at a time, each tried up to ``attempts`` times with a doubling delay
(``retry_delay``, at most :data:`MAX_DELAY_S`; longer when a 429 or 503 answer's
``Retry-After`` asks for it, in seconds). The queue holds :data:`QUEUE_SIZE`
notifications; when full, the oldest is dropped with a warning.

The webhook is operator configuration, not workflow input: it is sent through a client of
its own, which neither applies ``http_deny_networks`` (a webhook on 127.0.0.1 works) nor
follows redirects, nor reads proxy variables. The logs show its scheme and host only (its
path or query may hold a token).

Events: ``notify.sent`` (info), ``notify.failed`` (warning, each failed try, with the
``error`` and the ``delay`` before the next), ``notify.dropped`` (warning: given up, the
queue was full, or the daemon stopped before it was sent). Undelivered notifications do not
survive a restart: the result itself is in the outbox and the database.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping, MutableSequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import orjson
import structlog

from wfe_daemon.core.model import hide_url_secrets
from wfe_daemon.core.summary import RunSummary
from wfe_daemon.core.webhook import NotifySettings, is_webhook_url
from wfe_daemon.errors import ConfigError

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_DELAY_S", "QUEUE_SIZE", "Webhook", "webhook_url"]

log = structlog.get_logger()

NOTIFY_SENT: Final = "notify.sent"
NOTIFY_FAILED: Final = "notify.failed"
NOTIFY_DROPPED: Final = "notify.dropped"
QUEUE_SIZE: Final = 1000
MAX_DELAY_S: Final = 300.0
MAX_BODY_BYTES: Final = 1024 * 1024
"""A summary larger than this as JSON is sent without its nodes' outputs."""
_RETRIED_STATUSES: Final = frozenset({408, 425, 429})
"""Client errors worth another try (besides every 5xx); any other 4xx or 3xx is final."""


def webhook_url(notify: NotifySettings, environ: Mapping[str, str]) -> str | None:
    """The webhook: ``url``, else the first line of ``url_file`` (a relative path is read
    from ``$CREDENTIALS_DIRECTORY``, else the working directory); ``None`` when neither.

    Raises:
        ConfigError: the file cannot be read, is empty, or holds no http(s) URL (the
            message never shows what it holds).
    """
    if notify.url is not None or notify.url_file is None:
        return notify.url
    path = notify.url_file
    if not path.is_absolute():
        path = Path(environ.get("CREDENTIALS_DIRECTORY") or os.getcwd()) / path
    try:
        with open(path, "rb") as fp:
            text = fp.read(65536).decode("utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"config: notify.url_file: cannot read {path}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: notify.url_file: {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"config: notify.url_file: {path} is empty")
    if not is_webhook_url(text):
        raise ConfigError(
            f"config: notify.url_file: {path} must hold one http:// or https:// URL"
            " (its contents are not shown)"
        )
    return text


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what logs show of the webhook."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def headline(summary: Mapping[str, Any]) -> str:
    """One line for chat tools: ``workflow "w" (run 7, w.json) ended FAILED; failed: a, b``."""
    failed = [
        node_id
        for node_id, node in summary.get("nodes", {}).items()
        if node.get("status") == "FAILED"
    ]
    text = (
        f"wfe-daemon: workflow {json.dumps(summary.get('workflow'), ensure_ascii=False)}"
        f" (run {summary.get('run_id')}, {summary.get('source')}) ended {summary.get('status')}"
    )
    if failed:
        text += f"; failed: {', '.join(failed)}"
    elif summary.get("errors"):
        text += f"; {summary['errors'][0]}"
    return text


def payload(summary: RunSummary) -> bytes:
    """The JSON sent: ``text`` (:func:`headline`), then the summary as in the outbox.

    Over :data:`MAX_BODY_BYTES` the nodes' outputs are left out (``outputs_omitted``).
    """
    document: dict[str, Any] = {"text": headline(summary), **summary}
    data = _encode(document)
    if len(data) > MAX_BODY_BYTES:
        nodes = {
            node_id: {key: value for key, value in node.items() if key != "output"}
            for node_id, node in summary["nodes"].items()
        }
        data = _encode({**document, "nodes": nodes, "outputs_omitted": True})
    return data


def _encode(document: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:  # a value orjson refuses (a lone surrogate in a file name): escaped
        return json.dumps(document).encode()


class _Final(Exception):
    """Raised when the webhook's answer says another try would not help."""


class _Busy(OSError):
    """Raised when the webhook answered 5xx, 408, 425 or 429; ``after_s`` is its
    ``Retry-After`` in seconds, when it gave one."""

    def __init__(self, message: str, after_s: float | None) -> None:
        super().__init__(message)
        self.after_s = after_s


class Webhook:
    """The notifications of one process: a bounded queue and the loop that sends it.

    ``hooks`` are called with each outcome: ``"sent"``, ``"failed"`` (one try failed) or
    ``"dropped"`` (a notification given up); the metrics count them.
    """

    def __init__(
        self,
        notify: NotifySettings,
        url: str,
        *,
        hooks: MutableSequence[Callable[[str], None]] | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.notify = notify
        self.url = url
        self.shown = origin(url)
        self.hooks: MutableSequence[Callable[[str], None]] = [] if hooks is None else hooks
        self._queue: deque[RunSummary] = deque()
        self._size = queue_size
        self._current: RunSummary | None = None
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._client: httpx.AsyncClient | None = None

    def offer(self, summary: RunSummary) -> None:
        """Queue ``summary`` when its status is one of ``on``; never blocks."""
        if summary["status"] not in self.notify.on:
            return
        if len(self._queue) >= self._size:
            oldest = self._queue.popleft()
            self._dropped(oldest, f"the queue of {self._size} notifications is full")
        self._queue.append(summary)
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    def pending(self) -> int:
        """Notifications not sent yet (the one being tried included)."""
        return len(self._queue) + (self._current is not None)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Send the queue until cancelled; ``started`` once the client is open."""
        async with self._open() as client:
            self._client = client
            task_status.started()
            while True:
                if not self._queue:
                    self._idle.set()
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                self._current = self._queue.popleft()
                try:
                    await self.deliver(self._current)
                except Exception:  # a bug must not take the daemon down: that one is lost
                    log.exception(NOTIFY_DROPPED, **self._context(self._current))
                    self._tell("dropped")
                finally:
                    self._current = None

    async def flush(self) -> None:
        """Return once every queued notification was sent or given up."""
        await self._idle.wait()

    def abandon(self, reason: str) -> int:
        """Drop what is still queued (at shutdown), logging each; how many."""
        left = ([] if self._current is None else [self._current]) + list(self._queue)
        self._queue.clear()
        for summary in left:
            self._dropped(summary, reason)
        return len(left)

    async def deliver(self, summary: RunSummary) -> bool:
        """Send one notification, with retries; whether the webhook took it."""
        if self._client is None:
            async with self._open() as client:
                self._client = client
                try:
                    return await self.deliver(summary)
                finally:
                    self._client = None
        body = payload(summary)
        delay = self.notify.retry_delay
        attempts = self.notify.attempts
        for attempt in range(1, attempts + 1):
            try:
                code = await self._post(body)
            except _Final as exc:
                self._dropped(summary, str(exc), attempt=attempt)
                return False
            except Exception as exc:  # the webhook is down: try again later
                error = self._hidden(str(exc))
                if attempt == attempts:
                    self._dropped(summary, f"gave up after {attempts} tries: {error}")
                    return False
                if isinstance(exc, _Busy) and exc.after_s is not None:
                    delay = min(max(delay, exc.after_s), MAX_DELAY_S)
                self._tell("failed")
                log.warning(
                    NOTIFY_FAILED,
                    **self._context(summary),
                    attempt=attempt,
                    error=error,
                    delay=delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            self._tell("sent")
            log.info(NOTIFY_SENT, **self._context(summary), attempt=attempt, status_code=code)
            return True
        return False  # attempts >= 1: not reached

    async def _post(self, body: bytes) -> int:
        """One try; the status code of a 2xx answer.

        Raises:
            _Final: an answer another try would not change (a 4xx but 408, 425, 429; a 3xx).
            Exception: anything else (a transport error, a timeout, a 5xx), worth a retry.
        """
        import httpx

        from wfe_daemon.tasks.http.exchange import describe_error

        assert self._client is not None
        try:
            with anyio.fail_after(self.notify.timeout):
                # The answer's body is never read: a webhook's status says it all.
                async with self._client.stream("POST", self.url, content=body) as response:
                    pass
        except TimeoutError:
            raise OSError(f"timed out after {self.notify.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise OSError(describe_error(exc, self.notify.timeout)) from None
        code = response.status_code
        if 200 <= code <= 299:
            return code
        if code >= 500 or code in _RETRIED_STATUSES:
            after = response.headers.get("retry-after", "")
            after_s = float(after) if after.strip().isdigit() else None
            raise _Busy(f"the webhook answered {code}", after_s)
        raise _Final(f"the webhook answered {code}; not tried again")

    def _open(self) -> httpx.AsyncClient:
        import httpx

        from wfe_daemon import __version__

        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"wfe-daemon/{__version__}",
            **self.notify.headers,
        }
        return httpx.AsyncClient(
            headers=headers, trust_env=False, follow_redirects=False, timeout=None
        )

    def _dropped(self, summary: RunSummary, reason: str, **context: Any) -> None:
        self._tell("dropped")
        log.warning(NOTIFY_DROPPED, **self._context(summary), reason=reason, **context)

    def _context(self, summary: RunSummary) -> dict[str, Any]:
        return {"run_id": summary["run_id"], "status": summary["status"], "webhook": self.shown}

    def _hidden(self, text: str) -> str:
        """``text`` with the webhook's URL shown as its origin only."""
        return hide_url_secrets(text.replace(self.url, self.shown))

    def _tell(self, outcome: str) -> None:
        for hook in self.hooks:
            hook(outcome)
