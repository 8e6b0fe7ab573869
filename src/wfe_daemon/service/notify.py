"""Failure notifications: the summaries of runs that end in ``[notify] on``, POSTed to a webhook.

The daemon hands each published result to :meth:`Webhook.offer` (its ``on_published``
hook), which only queues it: the engine, the outbox and the next run never wait for the
webhook. :meth:`Webhook.run`, a task of the daemon's task group, sends the queue in order,
one notification at a time, each tried up to ``attempts`` times with a doubling delay
(``retry_delay``, at most :data:`MAX_DELAY_S`; longer when a retried answer, a 5xx, 408,
425 or 429, has a ``Retry-After`` in seconds). The queue holds the encoded bodies, at most
:data:`QUEUE_SIZE` of them and :data:`QUEUE_BYTES` in all; past either, the oldest is
dropped with a warning.

The webhook is operator configuration, not workflow input: it is sent through a client of
its own, which neither applies ``http_deny_networks`` (a webhook on 127.0.0.1 works) nor
follows redirects, nor reads proxy variables. The logs show its scheme and host only (its
path or query may hold a token).

Events: ``notify.sent`` (info), ``notify.failed`` (warning, each failed try, with the
``error`` and the ``delay`` before the next), ``notify.dropped`` (warning: given up, the
queue was full, or the process stopped before it was sent, however it stopped).
Undelivered notifications do not survive a restart: the result itself is in the outbox and
the database.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping, MutableSequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import orjson
import structlog

from wfe_daemon.core.model import hide_url_secrets
from wfe_daemon.core.summary import RunSummary
from wfe_daemon.core.webhook import MAX_DELAY_S, NotifySettings
from wfe_daemon.service.webhookurl import origin, prepared, webhook_url

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_DELAY_S", "QUEUE_BYTES", "QUEUE_SIZE", "Webhook", "webhook_url"]

log = structlog.get_logger()

NOTIFY_SENT: Final = "notify.sent"
NOTIFY_FAILED: Final = "notify.failed"
NOTIFY_DROPPED: Final = "notify.dropped"
QUEUE_SIZE: Final = 1000
QUEUE_BYTES: Final = 64 * 1024 * 1024
"""The encoded notifications queued, in all; past it the oldest are dropped."""
MAX_BODY_BYTES: Final = 1024 * 1024
"""A summary larger than this as JSON is sent without its nodes' outputs."""
_RETRIED_STATUSES: Final = frozenset({408, 425, 429})
"""Client errors worth another try (besides every 5xx); any other 4xx or 3xx is final."""


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


@dataclass(frozen=True, slots=True)
class _Note:
    """One notification as queued: its run, its status and the encoded body."""

    run_id: int
    status: str
    body: bytes

    @classmethod
    def of(cls, summary: RunSummary) -> _Note:
        return cls(summary["run_id"], summary["status"], payload(summary))


class Webhook:
    """The notifications of one process: a bounded queue and the loop that sends it.

    ``hooks`` are called with each outcome: ``"sent"``, ``"failed"`` (one try failed) or
    ``"dropped"`` (a notification given up); the metrics count them.

    Raises:
        ConfigError: the URL or a header cannot be sent (:func:`prepared`).
    """

    def __init__(
        self,
        notify: NotifySettings,
        url: str,
        *,
        hooks: MutableSequence[Callable[[str], None]] | None = None,
        queue_size: int = QUEUE_SIZE,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.notify = notify
        self.url = url
        self._target, self._headers = prepared(notify, url, "notify.url")
        self.shown = origin(url)
        self.hooks: MutableSequence[Callable[[str], None]] = [] if hooks is None else hooks
        self._queue: deque[_Note] = deque()
        self._size, self._budget, self._bytes = queue_size, queue_bytes, 0
        self._current: _Note | None = None
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._client: httpx.AsyncClient | None = None

    def offer(self, summary: RunSummary) -> None:
        """Queue ``summary`` when its status is one of ``on``; never blocks."""
        if summary["status"] not in self.notify.on:
            return
        note = _Note.of(summary)
        while self._queue and (
            len(self._queue) >= self._size or self._bytes + len(note.body) > self._budget
        ):
            oldest = self._queue.popleft()
            self._bytes -= len(oldest.body)
            self._dropped(
                oldest,
                f"the queue is full (at most {self._size} notifications, {self._budget} bytes)",
            )
        self._queue.append(note)
        self._bytes += len(note.body)
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    def pending(self) -> int:
        """Notifications not sent yet (the one being tried included)."""
        return len(self._queue) + (self._current is not None)

    def queued_bytes(self) -> int:
        """Bytes of the bodies waiting in the queue (the one being tried excluded)."""
        return self._bytes

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Send the queue until cancelled; ``started`` once the client is open. However it
        ends (a cancellation included), what is left is logged as dropped."""
        try:
            try:
                client = self._open()
            except Exception as exc:  # never into the daemon's task group
                log.exception(NOTIFY_FAILED, webhook=self.shown, error=self._hidden(str(exc)))
                task_status.started()
                while True:  # the webhook cannot be used: each notification is logged
                    await self._next()
                    self.abandon("the webhook's HTTP client could not be made")
            async with client:
                self._client = client
                task_status.started()
                while True:
                    await self._next()
                    self._current = note = self._take()
                    try:
                        await self._send(note)
                    except Exception:  # a bug must not take the daemon down: that one is lost
                        log.exception(NOTIFY_DROPPED, **self._context(note))
                        self._tell("dropped")
                    self._current = None  # not on a cancellation: abandon() logs it
        finally:
            self._client = None
            self.abandon("the daemon stopped before it was sent")

    async def _next(self) -> None:
        """Wait until the queue holds a notification."""
        while not self._queue:
            self._idle.set()
            self._wake = anyio.Event()
            await self._wake.wait()

    def _take(self) -> _Note:
        note = self._queue.popleft()
        self._bytes -= len(note.body)
        return note

    async def flush(self) -> None:
        """Return once every queued notification was sent or given up."""
        await self._idle.wait()

    def abandon(self, reason: str) -> int:
        """Drop what is still queued (at shutdown), logging each; how many."""
        left = ([] if self._current is None else [self._current]) + list(self._queue)
        self._queue.clear()
        self._current, self._bytes = None, 0
        for note in left:
            self._dropped(note, reason)
        if left:
            self._idle.set()
        return len(left)

    async def deliver(self, summary: RunSummary) -> bool:
        """Send one notification now, with retries; whether the webhook took it. Cancelled
        (Ctrl-C), it is logged as dropped."""
        note = _Note.of(summary)
        self._current = note
        try:
            async with self._open() as client:
                self._client = client
                done = await self._send(note)
            self._current = None
            return done
        finally:
            self._client = None
            self.abandon("stopped before it was sent")  # nothing once sent or given up

    async def _send(self, note: _Note) -> bool:
        """Try ``note`` up to ``attempts`` times; whether the webhook took it."""
        delay = min(self.notify.retry_delay, MAX_DELAY_S)
        attempts = self.notify.attempts
        for attempt in range(1, attempts + 1):
            try:
                code = await self._post(note.body)
            except _Final as exc:
                self._dropped(note, str(exc), attempt=attempt)
                return False
            except Exception as exc:  # the webhook is down: try again later
                error = self._hidden(str(exc))
                if attempt == attempts:
                    self._dropped(note, f"gave up after {attempts} tries: {error}")
                    return False
                if isinstance(exc, _Busy) and exc.after_s is not None:
                    delay = min(max(delay, exc.after_s), MAX_DELAY_S)
                self._tell("failed")
                log.warning(
                    NOTIFY_FAILED,
                    **self._context(note),
                    attempt=attempt,
                    error=error,
                    delay=delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            self._tell("sent")
            log.info(NOTIFY_SENT, **self._context(note), attempt=attempt, status_code=code)
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
                async with self._client.stream("POST", self._target, content=body) as response:
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
            after_s = float(after) if after.strip().isascii() and after.strip().isdigit() else None
            raise _Busy(f"the webhook answered {code}", after_s)
        raise _Final(f"the webhook answered {code}; not tried again")

    def _open(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            headers=self._headers, trust_env=False, follow_redirects=False, timeout=None
        )

    def _dropped(self, note: _Note, reason: str, **context: Any) -> None:
        self._tell("dropped")
        log.warning(NOTIFY_DROPPED, **self._context(note), reason=reason, **context)

    def _context(self, note: _Note) -> dict[str, Any]:
        return {"run_id": note.run_id, "status": note.status, "webhook": self.shown}

    def _hidden(self, text: str) -> str:
        """``text`` with the webhook's URL shown as its origin only."""
        return hide_url_secrets(text.replace(self.url, self.shown))

    def _tell(self, outcome: str) -> None:
        for hook in self.hooks:
            hook(outcome)
