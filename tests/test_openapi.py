"""The OpenAPI document is valid OpenAPI 3.1."""

from __future__ import annotations

import copy
import re

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

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
