"""The API's OpenAPI 3.1 document, served at ``/api/v1/openapi.json``.

Written as data, beside the handlers it describes; ``tests/test_openapi.py`` validates it
against the OpenAPI 3.1 schema and checks real answers of a running daemon against it.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from wfe_daemon import __version__
from wfe_daemon.web.server import reply

__all__ = ["document", "routes"]

_STATUSES = [
    "RUNNING",
    "SUCCESS",
    "PARTIAL_SUCCESS",
    "FAILED",
    "CANCELLED",
    "REJECTED",
    "DUPLICATE",
]
_NODE_STATUSES = ["PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED", "CANCELLED"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"$ref": "#/components/responses/Error", "description": description}


def _unavailable(description: str) -> dict[str, Any]:
    return {
        **_json(_ref("Error"), description),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer"},
            }
        },
    }


_RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "description": "The run's id (digits).",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_AUTH_ERRORS = {
    "401": _error("The token is missing or wrong."),
    "403": _error("No API token is configured: POST is refused until one is."),
}
_READ_ERRORS = {
    "401": _error("The server binds an address other than loopback: send the token."),
    "503": _error("The run history cannot be read now: the database's error is named."),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "problems"],
        "properties": {
            "error": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "string"}},
        },
    },
    "NodeEntry": {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"enum": _NODE_STATUSES},
            "attempts": {"type": "integer", "minimum": 0},
            "started_at": {"type": "string"},
            "finished_at": _nullable("string"),
            "duration": _nullable("number"),
            "output": {"description": "SUCCESS only: the node's output, secrets redacted."},
            "error": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "RunSummary": {
        "type": "object",
        "description": "The same shape as the result file in the outbox.",
        "required": ["run_id", "workflow", "source", "status", "nodes", "errors"],
        "properties": {
            "run_id": {"type": "integer"},
            "workflow": _nullable("string"),
            "source": _nullable("string"),
            "status": {"enum": _STATUSES},
            "started_at": {"type": "string"},
            "finished_at": _nullable("string"),
            "duration": _nullable("number"),
            "nodes": {"type": "object", "additionalProperties": _ref("NodeEntry")},
            "errors": {"type": "array", "items": {"type": "string"}},
            "duplicate_of": {"type": "integer"},
            "retry_of": {"type": "integer"},
        },
    },
    "RunListing": {
        "type": "object",
        "required": ["id", "name", "status", "started_at"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "status": {"enum": _STATUSES},
            "source": _nullable("string"),
            "started_at": _nullable("string"),
            "finished_at": _nullable("string"),
            "duration": _nullable("number"),
            "error": _nullable("string"),
            "retry_of": _nullable("integer"),
        },
    },
    "RunPage": {
        "type": "object",
        "required": ["runs", "next_cursor"],
        "properties": {
            "runs": {"type": "array", "items": _ref("RunListing")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Give it as `cursor` for the next (older) page; null at the end.",
            },
        },
    },
    "Counts": {
        "type": "object",
        "required": ["counts", "total"],
        "properties": {
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "total": {"type": "integer"},
        },
    },
    "Node": {
        "type": "object",
        "required": ["run_id", "node_id", "type", "status", "params", "depends_on"],
        "properties": {
            "run_id": {"type": "integer"},
            "node_id": {"type": "string"},
            "type": {"type": "string"},
            "status": {"enum": _NODE_STATUSES},
            "attempts": {"type": "integer"},
            "started_at": _nullable("string"),
            "finished_at": _nullable("string"),
            "duration": _nullable("number"),
            "output": {"description": "The output, secrets redacted; null until SUCCESS."},
            "error": _nullable("string"),
            "reason": _nullable("string"),
            "cause": _nullable("string"),
            "depends_on": {"type": "array", "items": {"type": "string"}},
            "params": {
                "type": "object",
                "description": "As resolved against the upstream outputs, secrets redacted.",
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["run_id", "status", "location"],
        "properties": {
            "run_id": {"type": "integer"},
            "status": {"enum": _STATUSES},
            "location": {"type": "string"},
            "duplicate_of": {"type": "integer"},
            "retry_of": {"type": "integer"},
        },
    },
    "TaskTypes": {
        "type": "object",
        "required": ["tasks"],
        "properties": {
            "tasks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "description", "params_schema"],
                    "properties": {
                        "type": {"type": "string"},
                        "description": {"type": "string"},
                        "params_schema": {"type": "object"},
                    },
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ok", "failing"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            "failing": {"type": "array", "items": {"type": "string"}},
        },
    },
}


_WORKFLOW_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A workflow document, as a file in the inbox holds it (see the README).",
    "properties": {
        "params": {
            "type": "object",
            "description": "A JSON Schema (`type: object`) of the values a run takes.",
        },
        "arguments": {
            "type": "object",
            "description": (
                "The run's values for `params` (defaults fill the rest); a value that fails"
                " the schema, or a missing required one, rejects the run (422)."
            ),
        },
        "scheduled_for": {
            "type": "string",
            "format": "date-time",
            "description": "The time the run is for: `{{ run.scheduled_for }}`.",
        },
    },
}


def _paths() -> dict[str, Any]:
    not_found = {"404": _error("No such run (or node).")}
    return {
        "/api/v1/workflows": {
            "post": {
                "operationId": "submitWorkflow",
                "summary": "Submit a workflow document, as a file in the inbox would hold it.",
                "description": (
                    "Validated and run exactly as a file dropped in the inbox; the result is"
                    " written to the outbox as `<stem>.result.json` (`<stem>.result.<run_id>.json`"
                    " when that name is taken). Answered once the"
                    " submission is durable: a crash after the answer loses nothing."
                ),
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "name",
                        "in": "query",
                        "description": "The result file's stem (default: the workflow's name).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": (
                            "Acts as the document's `idempotency_key` (the document is then"
                            " kept re-encoded, which must still fit `max_file_size`)."
                        ),
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _WORKFLOW_BODY}},
                },
                "responses": {
                    "201": _json(_ref("Accepted"), "Accepted: the run is recorded and queued."),
                    "200": _json(_ref("Accepted"), "A duplicate of an earlier run (same key)."),
                    "408": _error("The body did not arrive in time."),
                    "413": _error(
                        "The body is over `max_file_size` (also once re-encoded to hold the"
                        " `Idempotency-Key`)."
                    ),
                    "415": _error("The body is not `application/json`."),
                    "422": _error("The document is invalid: every problem is listed."),
                    "503": _unavailable(
                        "Not taken now: the database is not taking writes, the daemon is"
                        " stopping, too many submissions wait, or the file cannot be written"
                        " (nothing is kept). Or the run was not recorded within 10 s: the"
                        " daemon may still run it, so submit again with the same"
                        " `Idempotency-Key` (a second run is then a duplicate)."
                    ),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/runs": {
            "get": {
                "operationId": "listRuns",
                "summary": "Runs, newest first, a page at a time.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Comma-separated statuses.",
                        "schema": {"type": "string"},
                    },
                    {"name": "workflow", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "since",
                        "in": "query",
                        "description": "ISO 8601: runs started at or after it.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "description": "ISO 8601: runs started before it.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The last page's `next_cursor`: valid while runs arrive.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(_ref("RunPage"), "One page of runs."),
                    "422": _error("A parameter is invalid (it is named)."),
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/runs/counts": {
            "get": {
                "operationId": "countRuns",
                "summary": "How many runs there are by status, with the same filters.",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("workflow", "since", "until")
                ],
                "responses": {
                    "200": _json(_ref("Counts"), "Runs by status."),
                    "422": _error("A parameter is invalid."),
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/runs/{run_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "The run's result summary (live while it runs).",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": _json(_ref("RunSummary"), "The summary."),
                    **not_found,
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/runs/{run_id}/nodes/{node_id}": {
            "get": {
                "operationId": "getNode",
                "summary": "One node of a run: status, attempts, output, error, params.",
                "parameters": [
                    _RUN_ID,
                    {
                        "name": "node_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(_ref("Node"), "The node."),
                    **not_found,
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/runs/{run_id}/definition": {
            "get": {
                "operationId": "getDefinition",
                "summary": "The workflow document as stored (secrets redacted).",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": _json({"type": "object"}, "The document."),
                    **not_found,
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/runs/{run_id}/graph": {
            "get": {
                "operationId": "getGraph",
                "summary": "The DAG with each node's status.",
                "parameters": [
                    _RUN_ID,
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"enum": ["svg", "dot", "mermaid"], "default": "svg"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The graph.",
                        "content": {
                            "image/svg+xml": {"schema": {"type": "string"}},
                            "text/vnd.graphviz": {"schema": {"type": "string"}},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "422": _error("Unknown format."),
                    **not_found,
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "summary": "Cancel a running run (as `wfe-daemon cancel`).",
                "security": [{"bearer": []}],
                "parameters": [_RUN_ID],
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["run_id", "status"],
                            "properties": {
                                "run_id": {"type": "integer"},
                                "status": {"enum": _STATUSES},
                            },
                        },
                        "The cancel is under way.",
                    ),
                    "409": _error("The run is already finished."),
                    **not_found,
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/runs/{run_id}/retry": {
            "post": {
                "operationId": "retryRun",
                "summary": "Run a finished run again in the daemon, reusing its SUCCESS nodes.",
                "security": [{"bearer": []}],
                "parameters": [_RUN_ID],
                "responses": {
                    "201": _json(_ref("Accepted"), "The new run, recorded and queued."),
                    "409": _error("The run cannot be retried (running, rejected, duplicate)."),
                    "413": _error("Its workflow, as it would be written, is over `max_file_size`."),
                    "422": _error("Its definition is no longer valid."),
                    "503": _unavailable(
                        "Not taken now (as for a submission). Or the retry was not recorded"
                        " within 10 s: the daemon may still run it; look for a run with this"
                        " `retry_of` before asking again."
                    ),
                    **not_found,
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/events": {
            "get": {
                "operationId": "events",
                "summary": "Server-Sent Events: run and node transitions as they happen.",
                "description": (
                    "Events `run` and `node`, each with an id `<boot>-<seq>`. Reconnect with"
                    " `Last-Event-ID` to get what happened meanwhile; `reset` means the server"
                    " no longer holds those events: reload."
                ),
                "parameters": [
                    {"name": "run_id", "in": "query", "schema": {"type": "integer"}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "The stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "422": _error("`run_id` is not a run id (digits)."),
                    **_READ_ERRORS,
                },
            }
        },
        "/api/v1/tasks": {
            "get": {
                "operationId": "listTasks",
                "summary": "The registered task types with their params schemas.",
                "responses": {"200": _json(_ref("TaskTypes"), "The task types."), **_READ_ERRORS},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The daemon's health checks (open on every bind).",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "Every check passes."),
                    "503": _json(_ref("Health"), "A check fails: `failing` names it."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_READ_ERRORS,
                },
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wfe-daemon API",
            "version": __version__,
            "description": (
                "Submit workflows to a running wfe-daemon and follow their runs. Every POST"
                " needs the bearer token (`api_token_file` or `WFE_API_TOKEN`); reads need it"
                " when the server binds an address other than loopback. Errors are"
                ' `{"error": ..., "problems": [...]}`.'
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "An error.")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def _serve(request: web.Request) -> web.Response:
    return reply(document())


def routes(router: web.UrlDispatcher) -> None:
    """``GET /api/v1/openapi.json``."""
    router.add_get("/api/v1/openapi.json", _serve)
