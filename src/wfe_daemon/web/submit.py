"""Writes through the API: submit a workflow, cancel a run, retry a run.

``POST /api/v1/workflows`` takes a workflow document as a dropped file is taken, and
answers once it is durable (see :mod:`wfe_daemon.service.handover`): the daemon's
workers then run it and publish its result to the outbox. ``POST /api/v1/runs/{id}/retry``
hands a retry to the daemon the same way; ``POST /api/v1/runs/{id}/cancel`` cancels a
run of this daemon at once.
"""

from __future__ import annotations

import re

import anyio
from aiohttp import web

from wfe_daemon.errors import StoreError, WorkflowRejected
from wfe_daemon.service.cancel import cancel_here
from wfe_daemon.service.handover import (
    Accepted,
    NotTaken,
    TooLarge,
    Undecided,
    accept,
    accept_retry,
    stem_problem,
)
from wfe_daemon.service.intake import describe_os_error
from wfe_daemon.web.server import API, BODY_TIMEOUT_S, ApiError, reply

__all__ = ["routes"]

_RUN_ID = re.compile(r"[0-9]{1,18}")  # SQLite's integers end at 2**63 - 1: 18 digits fit
_JSON = "application/json"


def routes(router: web.UrlDispatcher) -> None:
    """``POST /api/v1/workflows``, ``/api/v1/runs/{id}/cancel`` and ``/api/v1/runs/{id}/retry``."""
    router.add_post("/api/v1/workflows", _submit)
    router.add_post("/api/v1/runs/{run_id}/cancel", _cancel)
    router.add_post("/api/v1/runs/{run_id}/retry", _retry)


async def _submit(request: web.Request) -> web.Response:
    api = request.app[API]
    data = await _json_body(request, api.settings.max_file_size)
    _check_room(request)
    stem = request.query.get("name")
    if stem is not None and (problem := stem_problem(stem)) is not None:
        raise ApiError(422, f"?name={stem}: {problem}", [problem])
    key = request.headers.get("Idempotency-Key")
    try:
        accepted = await accept(
            data,
            settings=api.settings,
            registry=api.daemon.registry,
            store=api.daemon.store,
            handover=api.handover,
            leftovers=api.daemon.leftovers,
            stem=stem,
            idempotency_key=key,
        )
    except WorkflowRejected as exc:
        raise ApiError(422, "the workflow is not valid", exc.problems) from None
    except TooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except OSError as exc:
        raise _unwritable(exc) from None
    except NotTaken as exc:
        raise _unavailable(f"the workflow was not taken: {exc}") from None
    except Undecided as exc:
        resubmit = (
            f"submit it again with the same Idempotency-Key ({key!r})"
            if key is not None
            else "check the runs before submitting again (an Idempotency-Key makes a second "
            "submission a DUPLICATE)"
        )
        raise _undecided(f"{exc}; the daemon may still run it: {resubmit}") from None
    return _answer(accepted)


async def _retry(request: web.Request) -> web.Response:
    api = request.app[API]
    run_id = _run_id(request)
    run = await api.daemon.store.get_run(run_id)
    if run is None:
        raise ApiError(404, f"no run {run_id}")
    _check_room(request)
    try:
        accepted = await accept_retry(
            run,
            settings=api.settings,
            registry=api.daemon.registry,
            store=api.daemon.store,
            handover=api.handover,
            leftovers=api.daemon.leftovers,
        )
    except StoreError as exc:
        raise ApiError(409, str(exc)) from None
    except WorkflowRejected as exc:
        raise ApiError(422, f"run {run_id} cannot be retried", exc.problems) from None
    except TooLarge as exc:
        raise ApiError(413, f"run {run_id} cannot be retried: {exc}") from None
    except OSError as exc:
        raise _unwritable(exc) from None
    except NotTaken as exc:
        raise _unavailable(f"the retry was not taken: {exc}") from None
    except Undecided as exc:
        raise _undecided(
            f"{exc}; the daemon may still run it: check the runs (retry_of {run_id}) "
            "before asking again"
        ) from None
    return _answer(accepted)


async def _cancel(request: web.Request) -> web.Response:
    api = request.app[API]
    run_id = _run_id(request)
    status = await cancel_here(api.daemon.store, api.daemon.engine, run_id)
    if status is None:
        raise ApiError(404, f"no run {run_id}")
    if status != "RUNNING":
        raise ApiError(409, f"run {run_id} is not running (it is {status}): nothing to cancel")
    return reply({"run_id": run_id, "status": status}, 202)


def _answer(accepted: Accepted) -> web.Response:
    """The answer for a recorded run (its file is handed to the workers already)."""
    location = f"/api/v1/runs/{accepted.run_id}"
    body: dict[str, object] = {"run_id": accepted.run_id, "status": accepted.status}
    if accepted.duplicate_of is not None:
        body["duplicate_of"] = accepted.duplicate_of
    if accepted.retry_of is not None:
        body["retry_of"] = accepted.retry_of
    body["location"] = location
    status = 200 if accepted.status == "DUPLICATE" else 201
    return reply(body, status, headers={"Location": location})


def _check_room(request: web.Request) -> None:
    """503 while too many submissions wait for the workers (nothing is written then)."""
    api = request.app[API]
    slots = api.settings.max_concurrent_workflows
    if api.handover.full(slots):
        raise ApiError(
            503,
            f"{api.handover.waiting} submissions already wait for the daemon's {slots} "
            "workflow slots: try again later",
            headers={"Retry-After": "10"},
        )


def _unavailable(error: str) -> ApiError:
    return ApiError(503, error, headers={"Retry-After": "10"})


def _undecided(error: str) -> ApiError:
    """A submission that may still run: 503 without ``Retry-After``, which would invite a
    blind resend (and a second run); the error says how to resend safely."""
    return ApiError(503, error)


def _unwritable(exc: OSError) -> ApiError:
    return ApiError(
        503,
        f"cannot write the workflow into inbox/processing/: {describe_os_error(exc)}",
        headers={"Retry-After": "10"},
    )


def _run_id(request: web.Request) -> int:
    text = request.match_info["run_id"]
    if not _RUN_ID.fullmatch(text):
        raise ApiError(404, f"no run {text!r}")
    return int(text)


async def _json_body(request: web.Request, max_size: int) -> bytes:
    """The request's body, checked: JSON content type (415), size (413), time (408)."""
    if request.content_type != _JSON or (request.charset or "utf-8").lower() != "utf-8":
        given = request.headers.get("Content-Type", "none")
        raise ApiError(
            415,
            f"a workflow is sent as Content-Type {_JSON} (UTF-8), got {given}",
        )
    if request.content_length is not None and request.content_length > max_size:
        raise _too_large(max_size, request.content_length)
    try:
        with anyio.fail_after(BODY_TIMEOUT_S):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_size, None) from None
    except TimeoutError:
        raise ApiError(
            408,
            f"the request body did not arrive in full within {BODY_TIMEOUT_S:g}s",
            headers={"Connection": "close"},
        ) from None


def _too_large(max_size: int, size: int | None) -> ApiError:
    got = "" if size is None else f" (got {size} bytes)"
    return ApiError(413, f"the workflow is over max_file_size, {max_size} bytes{got}")
