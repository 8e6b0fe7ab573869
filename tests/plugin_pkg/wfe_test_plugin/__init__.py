"""A wfe-daemon plugin for tests: ``reverse``, ``ShadowEchoTask`` for the clash test,
``ChattyTask``, which reports through the standard library's logging and asyncio, and
``BadSchemaTask``, whose ``params_schema`` is not a valid JSON Schema."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from wfe_daemon import Output, Params, TaskContext


class ReverseTask:
    """Reverses the string ``text``."""

    type: ClassVar[str] = "reverse"
    display_name: ClassVar[str] = "Reverse"
    description: ClassVar[str] = "Returns `text` reversed."
    category: ClassVar[str] = "test"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "What to reverse."}},
        "required": ["text"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None
    output_doc: ClassVar[Mapping[str, str]] = {"text": "The reversed text."}

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        return {"text": params["text"][::-1]}


class ShadowEchoTask(ReverseTask):
    """Claims the built-in type ``echo``: loading it must be refused."""

    type: ClassVar[str] = "echo"


class BadSchemaTask(ReverseTask):
    """A ``params_schema`` that breaks the metaschema: loading it must be refused."""

    type: ClassVar[str] = "bad_schema"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "minProperties": "two"}


class ChattyTask(ReverseTask):
    """Logs ``text`` with the standard library (at a custom level too, and once with a
    format it does not fit), and raises it in a loop callback."""

    type: ClassVar[str] = "chatty"

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        log = logging.getLogger("wfe_test_plugin")
        log.warning("connecting with %s", params["text"])
        log.log(35, "notice %s", params["text"])  # a level of the plugin's own
        log.error("retry %d", params["text"])  # arguments that do not fit the format
        asyncio.get_running_loop().call_soon(_fail, params["text"])
        await asyncio.sleep(0.05)  # the callback runs, and asyncio reports it
        return {}


def _fail(text: str) -> None:
    raise ValueError(f"refused {text}")
