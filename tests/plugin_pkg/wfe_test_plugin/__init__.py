"""A wfe-daemon plugin for tests: ``reverse``, and ``ShadowEchoTask`` for the clash test."""

from __future__ import annotations

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
