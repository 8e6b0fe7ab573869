"""The OpenAPI document: valid OpenAPI 3.1, served by the daemon, covering every route, and
true to what a running daemon answers."""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from daemon_helpers import Daemons, drop, echo_then_sleep, free_port, get, wait_result
from wfe_daemon.web.openapi import document


def _shape(path: str) -> str:
    """A route with its parameters' names blanked: ``/runs/{}`` for ``/runs/{run_id}``."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator accepts the document, and refuses a broken copy (so the
    check means something)."""
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    broken = copy.deepcopy(doc)
    broken["paths"]["/api/v1/runs"]["get"]["parameters"][0]["in"] = "body"  # 2.0, not 3.1
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_route_is_documented_and_every_documented_path_is_routed() -> None:
    """The server's routes and the document's paths are the same set."""
    from aiohttp import web

    from wfe_daemon.web import front, server

    router = web.UrlDispatcher()
    for add in front.parts():
        add(router)
    server._own_routes(router)
    routed = {
        (_shape(resource.canonical), route.method)
        for resource in router.resources()
        for route in resource
        if route.method != "HEAD"
    }
    routed = {(path, method) for path, method in routed if path.startswith(("/api/", "/m", "/h"))}
    documented = {
        (_shape(path), method.upper())
        for path, item in document()["paths"].items()
        for method in item
    }
    assert routed == documented


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of one response schema, its ``$ref`` resolved in the whole document."""
    return Draft202012Validator({**schema, "components": document()["components"]})


def _schema(path: str, method: str, status: int) -> dict[str, Any]:
    response = document()["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document()["components"]["responses"]["Error"]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def _read(port: int, path: str) -> tuple[int, Any]:
    status, body = get(port, path)
    return status, json.loads(body)


@pytest.mark.timeout(60)
def test_a_running_daemon_answers_as_documented(daemons: Daemons) -> None:
    """The served document is :func:`document`; each read endpoint's answer (and an
    error's) validates against its documented schema."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port))
    drop(daemons.inbox, "shape.json", echo_then_sleep("shape", 0.01))
    run_id = wait_result(daemons.outbox, "shape")["run_id"]
    assert _read(port, "/api/v1/openapi.json") == (200, json.loads(json.dumps(document())))
    checks = [
        ("/api/v1/runs", "/api/v1/runs?limit=5", 200),
        ("/api/v1/runs", "/api/v1/runs?limit=0", 422),
        ("/api/v1/runs/counts", "/api/v1/runs/counts", 200),
        ("/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}", 200),
        ("/api/v1/runs/{run_id}", "/api/v1/runs/999999", 404),
        ("/api/v1/runs/{run_id}/nodes/{node_id}", f"/api/v1/runs/{run_id}/nodes/b", 200),
        ("/api/v1/runs/{run_id}/definition", f"/api/v1/runs/{run_id}/definition", 200),
        ("/api/v1/tasks", "/api/v1/tasks", 200),
        ("/healthz", "/healthz", 200),
    ]
    for documented, path, expected in checks:
        status, body = _read(port, path)
        assert status == expected, (path, body)
        errors = [
            e.message for e in _validator(_schema(documented, "get", status)).iter_errors(body)
        ]
        assert errors == [], (path, errors)


def test_submission_answers_as_documented(daemons: Daemons) -> None:
    """A 201 and a 422 of ``POST /api/v1/workflows`` validate against their schemas."""
    port = free_port()
    daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN="s3cret-token")
    for doc, expected in ((echo_then_sleep("posted", 0.01), 201), ({"nodes": 3}, 422)):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/workflows",
            data=json.dumps(doc).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret-token"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.load(exc)
        assert status == expected, body
        schema = _schema("/api/v1/workflows", "post", status)
        assert [e.message for e in _validator(schema).iter_errors(body)] == []


@pytest.mark.parametrize("path", ["/api/v1/workflows", "/api/v1/runs/{run_id}/retry"])
def test_the_writes_document_their_503_with_retry_after(path: str) -> None:
    """Both POSTs that hand work to the daemon document their 503 (not taken now, or not
    recorded in time) with its ``Retry-After`` header, and their 413."""
    responses = document()["paths"][path]["post"]["responses"]
    assert "Retry-After" in responses["503"]["headers"]
    assert (
        "Idempotency-Key" in responses["503"]["description"]
        or "retry_of" in (responses["503"]["description"])
    )
    assert "max_file_size" in responses["413"]["description"]
