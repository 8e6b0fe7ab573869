"""Process-wide resources that tasks share, opened once by ``execute`` and the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from wfe_daemon.config import Settings


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Mapping[str, Any]]:
    """Open what tasks reach through ``ctx.services`` and close it on exit.

    Today that is ``"http"``: the one pooled HTTP client of ``http_get``.
    """
    from wfe_daemon.tasks.http import open_http_client

    async with open_http_client(settings) as http:
        yield {"http": http}
