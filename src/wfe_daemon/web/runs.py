"""The API's reads: runs (a page, counts, one run, a node, the definition, the graph), tasks.

Every read goes through ``Api.reader``, a read-only connection of its own, so a page of
history never waits for (nor holds up) the engine's writes. A run id in a path is digits
only and a node id is matched exactly against the run's nodes: nothing in a path is
ever used on disk.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial, wraps
from typing import Any

from aiohttp import web
from anyio import to_thread

from wfe_daemon.core import refs
from wfe_daemon.core.graph import dot, graph_nodes, mermaid
from wfe_daemon.core.inputs import shown_values
from wfe_daemon.core.model import RunStatus, redact_secrets
from wfe_daemon.core.records import NodeRecord, RunRecord, summary_of
from wfe_daemon.errors import ParamsError, StoreError
from wfe_daemon.store.database import Store
from wfe_daemon.web.server import API, Api, ApiError, reply

__all__ = ["routes"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_CURSOR_PREFIX = "before:"
_LIST_PARAMS = ("status", "workflow", "since", "until", "limit", "cursor")
_COUNT_PARAMS = ("workflow", "since", "until")
_FORMATS: Mapping[str, str] = {
    "svg": "image/svg+xml",
    "dot": "text/vnd.graphviz",
    "mermaid": "text/plain",
}
_SHOWN_MAX = 80
"""At most this much of a bad value is quoted back in an error."""


def routes(router: web.UrlDispatcher) -> None:
    """Add the read endpoints under ``/api/v1``."""
    router.add_get("/api/v1/runs", _reading(_runs))
    # before ``{run_id}``, which it would fit
    router.add_get("/api/v1/runs/counts", _reading(_counts))
    router.add_get("/api/v1/runs/{run_id}", _reading(_run))
    router.add_get("/api/v1/runs/{run_id}/nodes/{node_id}", _reading(_node))
    router.add_get("/api/v1/runs/{run_id}/definition", _reading(_definition))
    router.add_get("/api/v1/runs/{run_id}/graph", _reading(_graph))
    router.add_get("/api/v1/tasks", _tasks)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reading(handler: Handler) -> Handler:
    """``handler`` with a database that cannot be read now answered 503, naming why."""

    @wraps(handler)
    async def reading(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreError as exc:
            raise ApiError(503, f"the run history cannot be read now: {exc}") from exc

    return reading


def _reader(api: Api) -> Store:
    return api.reader if api.reader is not None else api.daemon.store


# -- query parameters ------------------------------------------------------------------------


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + "...")


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _unprocessable(name, "given more than once")
    return values[0] if values else None


def _unprocessable(name: str, problem: str) -> ApiError:
    return ApiError(422, f"bad query parameter '{name}'", [f"{name}: {problem}"])


def _check_names(request: web.Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(
            422,
            f"unknown query parameter {_shown(unknown[0])}",
            [f"{name}: not a parameter here (known: {', '.join(allowed)})" for name in unknown],
        )


def _statuses(request: web.Request) -> list[str]:
    wanted = [s.strip() for value in request.query.getall("status", []) for s in value.split(",")]
    wanted = [status for status in wanted if status]  # ``status=``: no filter
    valid = {str(status) for status in RunStatus}
    bad = [status for status in wanted if status not in valid]
    if bad:
        raise _unprocessable(
            "status", f"{_shown(bad[0])} is not a run status ({', '.join(RunStatus)})"
        )
    return wanted


def _stamp(request: web.Request, name: str) -> str | None:
    """An ISO 8601 parameter as the store's UTC text (a stamp without offset is UTC)."""
    text = _single(request, name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _unprocessable(
            name, f"{_shown(text)} is not an ISO 8601 date or time (e.g. 2026-12-04T05:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise _unprocessable(name, f"{_shown(text)} is out of range in UTC") from None


def _limit(request: web.Request) -> int:
    text = _single(request, "limit")
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise _unprocessable("limit", f"{_shown(text)} is not a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def encode_cursor(run_id: int) -> str:
    """The cursor of the page after the run ``run_id`` (opaque to clients)."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{run_id}".encode()).decode().rstrip("=")


def _cursor(request: web.Request) -> int | None:
    text = _single(request, "cursor")
    if text is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    number = decoded.removeprefix(_CURSOR_PREFIX)
    digits = number.isascii() and number.isdigit() and len(number) <= 18  # an SQLite integer
    if not decoded.startswith(_CURSOR_PREFIX) or not digits:
        raise _unprocessable("cursor", f"{_shown(text)} is not a cursor this API gave")
    return int(number)


def _workflow(request: web.Request) -> str | None:
    name = _single(request, "workflow")
    if name is not None and not name:
        raise _unprocessable("workflow", "empty: give a workflow name or leave it out")
    return name


# -- handlers --------------------------------------------------------------------------------


async def _runs(request: web.Request) -> web.Response:
    """``GET /api/v1/runs``: a page of runs, newest first, and the cursor of the next."""
    _check_names(request, _LIST_PARAMS)
    statuses, workflow = _statuses(request), _workflow(request)
    since, until = _stamp(request, "since"), _stamp(request, "until")
    limit, before = _limit(request), _cursor(request)
    rows = await _reader(request.app[API]).page_runs(
        limit + 1,  # one more says whether a next page exists
        before=before,
        statuses=statuses,
        workflow=workflow,
        since=since,
        until=until,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return reply({"runs": page, "next_cursor": encode_cursor(page[-1]["id"]) if more else None})


async def _counts(request: web.Request) -> web.Response:
    """``GET /api/v1/runs/counts``: how many runs have each status."""
    _check_names(request, _COUNT_PARAMS)
    counts = await _reader(request.app[API]).count_runs(
        workflow=_workflow(request),
        since=_stamp(request, "since"),
        until=_stamp(request, "until"),
    )
    return reply({"counts": counts, "total": sum(counts.values())})


async def _stored_run(request: web.Request) -> RunRecord:
    """The run the path names, or a 404."""
    text = request.match_info["run_id"]
    run = None
    if text.isascii() and text.isdigit() and len(text) <= 18:  # beyond: no SQLite integer
        run = await _reader(request.app[API]).get_run(int(text))
    if run is None:
        raise ApiError(404, f"no run {_shown(text)}")
    return run


async def _run(request: web.Request) -> web.Response:
    """``GET /api/v1/runs/{id}``: the result summary (built live while it runs)."""
    run = await _stored_run(request)
    summary = run["result_summary"]
    if run["status"] == RunStatus.RUNNING or summary is None:
        summary = summary_of(run)
    return reply(summary)


def _definition_nodes(run: RunRecord) -> dict[str, dict[str, Any]]:
    """The stored definition's nodes by id."""
    definition = run["definition"]
    raw = definition.get("nodes") if isinstance(definition, dict) else None
    return {
        item["id"]: item
        for item in (raw if isinstance(raw, list) else [])
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    }


def resolved_params(
    params: Any, nodes: list[NodeRecord], reserved: Mapping[str, Any] | None = None
) -> Any:
    """``params`` with references resolved from the outputs of the nodes that succeeded,
    as the engine resolved them, then redacted; as written when one cannot be resolved.
    ``reserved``: the values of ``params``, ``run`` and ``secrets`` (``shown_values``),
    except where a node of the run has that id (a run stored before the ids were
    reserved): its references meant that node."""
    outputs = {row["node_id"]: row["result_data"] for row in nodes if row["status"] == "SUCCESS"}
    ids = {row["node_id"] for row in nodes}
    outputs.update((root, value) for root, value in (reserved or {}).items() if root not in ids)
    with suppress(ParamsError):  # else an upstream has no output (yet, or ever): as written
        params = refs.resolve(params, outputs)
    return redact_secrets(params)


async def _node(request: web.Request) -> web.Response:
    """``GET /api/v1/runs/{id}/nodes/{node_id}``: one node's state and resolved params."""
    run = await _stored_run(request)
    node_id = request.match_info["node_id"]
    row = next((row for row in run["nodes"] if row["node_id"] == node_id), None)
    if row is None:
        raise ApiError(404, f"run {run['id']} has no node {_shown(node_id)}")
    item = _definition_nodes(run).get(node_id, {})
    deps = item.get("depends_on")
    return reply(
        {
            "run_id": run["id"],
            "node_id": node_id,
            "type": row["type"],
            "status": row["status"],
            "attempts": row["attempts"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "duration": row["duration"],
            "output": row["result_data"],
            "error": row["error"],
            "reason": row["reason"],
            "cause": row["cause"],
            "depends_on": [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else [],
            "params": resolved_params(
                item.get("params", {}), run["nodes"], shown_values(run["definition"], run["id"])
            ),
        }
    )


async def _definition(request: web.Request) -> web.Response:
    """``GET /api/v1/runs/{id}/definition``: the workflow document as stored."""
    run = await _stored_run(request)
    if run["definition"] is None:
        raise ApiError(404, f"run {run['id']} ({run['status']}) has no stored workflow")
    return reply(run["definition"])


async def _graph(request: web.Request) -> web.Response:
    """``GET /api/v1/runs/{id}/graph?format=svg|dot|mermaid``: the graph with its statuses."""
    _check_names(request, ("format",))
    fmt = _single(request, "format") or "svg"
    if fmt not in _FORMATS:
        raise _unprocessable("format", f"{_shown(fmt)} is not one of {', '.join(_FORMATS)}")
    run = await _stored_run(request)
    nodes = graph_nodes(run["definition"])
    if not nodes:
        raise ApiError(404, f"run {run['id']} ({run['status']}) has no stored workflow to draw")
    statuses = {row["node_id"]: row["status"] for row in run["nodes"]}
    if fmt == "svg":
        text = await request.app[API].graphs.svg(run["id"], run["name"], nodes, statuses)
    elif fmt == "dot":  # tens of milliseconds for 1,000 nodes: off the event loop
        text = await to_thread.run_sync(partial(dot, anchors=True), run["name"], nodes, statuses)
    else:
        text = await to_thread.run_sync(mermaid, nodes, statuses)
    return web.Response(text=text, content_type=_FORMATS[fmt], charset="utf-8")


async def _tasks(request: web.Request) -> web.Response:
    """``GET /api/v1/tasks``: every registered task type, its description and params schema."""
    described = request.app[API].daemon.registry.describe()
    return reply(
        {
            "tasks": [
                {
                    "type": task["type"],
                    "description": task["description"],
                    "params_schema": task["params_schema"],
                }
                for task in described
            ]
        }
    )
