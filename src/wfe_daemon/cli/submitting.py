"""``submit`` and ``retry --detach``: hand work to the running daemon.

With ``http_port`` set, the workflow is POSTed to the daemon's API (with the token of
``WFE_API_TOKEN`` or ``api_token_file``); without it, ``submit`` copies the file into the
inbox atomically (a dotfile first, which intake ignores, then a link to its name) and
waits for the daemon to record it. ``--wait`` follows the run in the database (read-only)
until it ends, and exits as ``execute`` does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wfe_daemon.config import Settings
from wfe_daemon.errors import StoreError, UsageError
from wfe_daemon.service.apitoken import read_token

__all__ = [
    "ApiRefused",
    "Submitted",
    "api_base",
    "print_refusal",
    "retry_detached",
    "submit_file",
    "wait_for_run",
]

HTTP_TIMEOUT_S = 30.0
"""How long a request to the daemon may take (a large workflow is parsed before the answer)."""
TAKE_TIMEOUT_S = 30.0
"""How long ``submit`` waits for the daemon to record a file copied into the inbox."""
POLL_S = 0.2

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Talks to the daemon directly: ``http_proxy`` and the like must never see its token."""


class ApiRefused(Exception):
    """Raised when the daemon answers with an error: ``status``, ``error`` and ``problems``."""

    def __init__(self, status: int, error: str, problems: list[str]) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.problems = problems

    def lines(self) -> list[str]:
        """The error and each problem, one line each."""
        return [f"wfe-daemon: {self.error}", *(f"wfe-daemon: {p}" for p in self.problems)]

    @property
    def exit_code(self) -> int:
        """2 for a rejected workflow or a usage problem (token, size, type), 1 otherwise
        (no such run, not retryable, a failure in the daemon), as the other commands."""
        return 2 if self.status in _USAGE_STATUSES else 1


_USAGE_STATUSES = frozenset({400, 401, 403, 413, 415, 422})


@dataclass(frozen=True, slots=True)
class Submitted:
    """What the daemon answered: the run id, and the answer itself (``--json``)."""

    run_id: int
    answer: dict[str, Any]


def api_base(settings: Settings) -> str | None:
    """``http://host:port`` of the daemon's API, or ``None`` when ``http_port`` is 0.

    A daemon listening on every address (``0.0.0.0``, ``::``) is reached on 127.0.0.1.
    """
    port = settings.http_port or settings.metrics_port
    if not port:
        return None
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def submit_file(
    settings: Settings,
    environ: Mapping[str, str],
    data: bytes,
    *,
    stem: str,
    idempotency_key: str | None,
) -> Submitted:
    """Hand ``data`` (a workflow document) to the daemon: by its API, else by the inbox.

    Raises:
        ApiRefused: the daemon refused it (e.g. 422 with every problem).
        StoreError: the daemon cannot be reached, or it did not take the file in time.
        UsageError: the inbox copy cannot be made.
    """
    base = api_base(settings)
    if base is None:
        return _drop_in_inbox(settings, data, stem)
    from wfe_daemon.service.handover import stem_problem

    headers = {"Content-Type": "application/json"}
    # Always a key, so that a submission whose answer was lost can be sent again safely:
    # the given one, else the document's own, else a new one sent in the header.
    key = idempotency_key or _own_key(data)
    if key is None or idempotency_key is not None:
        key = key or str(uuid.uuid4())
        headers["Idempotency-Key"] = key
    # A file stem the API refuses (``--name`` is checked already) gives way to the
    # workflow's name, as the daemon chooses it.
    query = "" if stem_problem(stem) else "?" + urllib.parse.urlencode({"name": stem})
    again = (
        f"to submit it again without running it twice, give --idempotency-key {key} (the "
        "daemon then answers DUPLICATE if it has it)"
    )
    url = f"{base}/api/v1/workflows{query}"
    try:
        answer = _post(
            settings,
            environ,
            url,
            data,
            headers,
            unanswered=f"the daemon may have taken it (Idempotency-Key {key}): check with "
            f"`wfe-daemon runs`; {again}",
        )
    except ApiRefused as exc:
        if exc.status == 503:
            exc.problems.append(f"the workflow was sent with Idempotency-Key {key}: {again}")
        raise
    return Submitted(int(answer["run_id"]), answer)


def _own_key(data: bytes) -> str | None:
    """The document's own ``idempotency_key``, if it holds one (the daemon checks the rest)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    key = doc.get("idempotency_key") if isinstance(doc, dict) else None
    return key if isinstance(key, str) and key else None


def retry_detached(settings: Settings, environ: Mapping[str, str], run_id: int) -> Submitted:
    """Ask the daemon to retry run ``run_id``; the new run.

    Raises:
        UsageError: no ``http_port`` is configured.
        ApiRefused: the daemon refused (no such run, not retryable).
        StoreError: the daemon cannot be reached.
    """
    base = api_base(settings)
    if base is None:
        raise UsageError(
            "retry --detach needs the daemon's HTTP API: set http_port (WFE_HTTP_PORT or "
            "--http-port) as the daemon has it, or retry without --detach"
        )
    answer = _post(
        settings,
        environ,
        f"{base}/api/v1/runs/{run_id}/retry",
        b"",
        {},
        unanswered=f"the daemon may have taken the retry: check with `wfe-daemon runs` for a "
        f"run with retry_of {run_id} before asking again",
    )
    return Submitted(int(answer["run_id"]), answer)


def _post(
    settings: Settings,
    environ: Mapping[str, str],
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    unanswered: str,
) -> dict[str, Any]:
    """POST ``body``; the daemon's JSON answer. ``unanswered`` says what to do when the
    request reached the daemon but no answer came in :data:`HTTP_TIMEOUT_S`."""
    token = read_token(settings, environ)
    if token is not None:
        headers["Authorization"] = f"Bearer {token.decode()}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _DIRECT.open(request, timeout=HTTP_TIMEOUT_S) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        with exc:
            raise _refused(exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        # Sent, then no answer (a timeout, or the daemon closed the connection as it
        # stopped): the daemon may have taken it. Only a refused connection is "not there".
        if isinstance(reason, TimeoutError | ConnectionResetError | BrokenPipeError) or isinstance(
            exc, http.client.HTTPException
        ):
            raise StoreError(
                f"no answer from the daemon at {url.split('/api/')[0]} "
                f"({reason or 'the connection was closed'}): {unanswered}"
            ) from None
        raise StoreError(
            f"cannot reach the daemon at {url.split('/api/')[0]}: {reason} "
            "(is `wfe-daemon run` running with this http_port?)"
        ) from None


def _refused(status: int, body: bytes) -> ApiRefused:
    try:
        doc = json.loads(body)
        error, problems = str(doc["error"]), [str(p) for p in doc.get("problems", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        error, problems = f"the daemon answered HTTP {status}", []
    return ApiRefused(status, error, problems)


def _drop_in_inbox(settings: Settings, data: bytes, stem: str) -> Submitted:
    """Copy ``data`` into the inbox as ``<stem>.json`` and wait until the daemon records it."""
    name = f"{stem}.json"
    if name.startswith(".") or "/" in name:
        raise UsageError(f"--name {stem!r}: the inbox takes no such file name")
    inbox = settings.inbox
    if not inbox.is_dir():
        raise UsageError(f"inbox {inbox} does not exist: is the daemon configured with it?")
    before = _newest_run(settings)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=inbox)
    except OSError as exc:
        raise UsageError(f"cannot write into the inbox {inbox}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.link(tmp_name, inbox / name)  # unlike rename, never replaces a waiting file
    except FileExistsError:
        raise UsageError(
            f"{inbox / name} exists (a file of that name waits to be taken): "
            "try again, or give another --name"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
    run_id = _run_until(settings, lambda: _taken(settings, name, before), TAKE_TIMEOUT_S)
    if run_id is None:
        if (inbox / name).exists():
            raise StoreError(
                f"no daemon took {inbox / name} within {TAKE_TIMEOUT_S:g}s: is `wfe-daemon "
                "run` running on this inbox? (the file stays there until one takes it)"
            )
        raise StoreError(
            f"{inbox / name} was taken, but no run of it appeared in {settings.db_path} "
            f"within {TAKE_TIMEOUT_S:g}s: does this command read the daemon's configuration?"
        )
    return Submitted(run_id, {"run_id": run_id})


def _newest_run(settings: Settings) -> int:
    from wfe_daemon.runtime.eventloop import run

    async def newest() -> int:
        from wfe_daemon.store.database import Store

        async with Store.open_read_only(settings.db_path) as store:
            listing = await store.list_runs(1)
        return listing[0]["id"] if listing else 0

    return run(newest())


def _taken(settings: Settings, name: str, after: int) -> int | None:
    """The run the daemon recorded for inbox file ``name`` since run ``after``, if any."""
    from wfe_daemon.runtime.eventloop import run

    async def find() -> int | None:
        from wfe_daemon.store.database import Store

        async with Store.open_read_only(settings.db_path) as store:
            listing = await store.list_runs(50)
        found = [row["id"] for row in listing if row["id"] > after and row["source"] == name]
        return min(found) if found else None

    return run(find())


def _run_until(settings: Settings, probe: Any, timeout_s: float | None) -> Any:
    """Call ``probe`` every :data:`POLL_S` until it returns something; ``None`` on timeout."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            found = probe()
        except StoreError:
            found = None  # e.g. the daemon has not created the database yet
        if found is not None:
            return found
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)


def wait_for_run(settings: Settings, run_id: int) -> dict[str, Any]:
    """Follow run ``run_id`` in the database (read-only) until it ends; its summary.

    Raises:
        StoreError: the run does not appear in ``db_path`` within :data:`TAKE_TIMEOUT_S`
            (this command does not read the daemon's database).
    """
    from wfe_daemon.runtime.eventloop import run

    async def read() -> tuple[bool, dict[str, Any] | None]:
        from wfe_daemon.store.database import Store

        async with Store.open_read_only(settings.db_path) as store:
            record = await store.get_run(run_id)
        if record is None or record["status"] == "RUNNING":
            return record is not None, None
        return True, dict(record["result_summary"] or {}) or None

    deadline = time.monotonic() + TAKE_TIMEOUT_S
    while True:
        try:
            seen, summary = run(read())
        except StoreError:
            seen, summary = False, None  # the database is not there yet
        if summary is not None:
            return summary
        if seen:
            deadline = float("inf")
        elif time.monotonic() > deadline:
            raise StoreError(
                f"run {run_id} is not in {settings.db_path}: --wait follows the run in the "
                "daemon's database, so give this command the daemon's db_path"
            )
        time.sleep(POLL_S)


def print_refusal(exc: ApiRefused) -> int:
    """Print the daemon's refusal on stderr; the exit status."""
    for line in exc.lines():
        print(line, file=sys.stderr)
    return exc.exit_code
