"""``http_post``: a POST, PUT or PATCH with a JSON or form body, as ``http_get`` sends a GET.

It goes through the same shared client with the same address checks, limits, deadline and
error messages (:func:`~wfe_daemon.tasks.http.exchange.exchange`), and returns the same
output. Redirects: a 301, 302 or 303 is followed with a GET without a body; a 307 or 308
with the same method and body, to the same origin only (another origin fails the node);
each hop checked, up to 10, secret-looking headers dropped on a hop to another origin.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from wfe_daemon.core.strictjson import compact
from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.task import Output, Params, TaskContext
from wfe_daemon.tasks.http.exchange import Body, exchange
from wfe_daemon.tasks.http.task import HttpGetTask

__all__ = ["HttpPostTask"]

METHODS: Final = ("POST", "PUT", "PATCH")
_SHARED: Final = ("headers", "query", "timeout", "expect_status", "save_to", "max_bytes")


class HttpPostTask:
    """Send a JSON or form body with POST, PUT or PATCH; return the answer as ``http_get`` does."""

    type: ClassVar[str] = "http_post"
    display_name: ClassVar[str] = "HTTP POST"
    description: ClassVar[str] = (
        "Sends a JSON body (json) or form fields (form), or no body, with POST (default), PUT"
        " or PATCH, to an http or https URL: a webhook, an API. Redirects: 301/302/303 become"
        " a GET without a body; 307/308 keep the method and body but are not followed to"
        " another origin (scheme, host or port: the node fails, so the body never goes where"
        " the workflow did not say, nor from https to http); a hop to another origin drops"
        " secret-looking headers (Authorization, X-Api-Key...). Address checks, limits and"
        " errors are those of http_get, and so is the output: status_code, headers, elapsed"
        " and bytes, plus path when saved (save_to), else text, and json when the answer is"
        " JSON."
    )
    category: ClassVar[str] = "network"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {
                **HttpGetTask.params_schema["properties"]["url"],
                "description": "The http:// or https:// URL to send to (any other scheme is"
                " rejected with the file; a {{ reference }} is checked once resolved).",
            },
            "method": {
                "enum": list(METHODS),
                "default": "POST",
                "description": "POST, PUT or PATCH.",
            },
            "json": {
                "description": "The body: any JSON value, sent as application/json (unless"
                " headers name another Content-Type). A {{ reference }} keeps its JSON type.",
            },
            "form": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The body as form fields, sent as"
                " application/x-www-form-urlencoded. Not with json.",
            },
            **{key: HttpGetTask.params_schema["properties"][key] for key in _SHARED},
        },
        "required": ["url"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = 60.0
    uses_http: ClassVar[bool] = True
    """``ctx.services.http`` is opened before the timeout starts (``Services.open_now``)."""

    def validate_params(self, params: Params, *, resolved: bool) -> list[str]:
        """``json`` and ``form`` are two ways to give the body: at most one of them."""
        if "json" in params and "form" in params:
            return ["give the body as json or as form, not both"]
        return []

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        return await exchange(params.get("method", "POST"), params, ctx, _body(params))


def _body(params: Params) -> Body:
    """The encoded body and its Content-Type, or ``None`` when neither is given."""
    if "json" in params:
        try:
            text = compact(params["json"]).encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
            raise TaskFailed(f"json: cannot be sent as JSON: {exc}") from exc
        return text, "application/json"
    if "form" in params:
        from urllib.parse import urlencode

        return urlencode(params["form"]).encode(), "application/x-www-form-urlencoded"
    return None


TASKS = (HttpPostTask,)
