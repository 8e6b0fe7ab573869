"""The read-only web page: ``GET /`` and its scripts and style sheet under ``/static/``.

The files ship inside the package (``web/static/``). A request names one of a fixed set of
files; nothing from the request is ever used as a path. The page itself is a small
single-page app over ``/api/v1`` (runs, a run with its graph and timeline, a node, task
types) and works under the server's Content-Security-Policy: no inline script or style.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final

from aiohttp import web

from wfe_daemon.web.server import ApiError

__all__ = ["STATIC", "routes"]

STATIC: Final = {
    **dict.fromkeys(
        ("app.js", "common.js", "live.js", "runs.js", "run.js", "node.js", "tasks.js", "token.js"),
        "text/javascript",
    ),
    "app.css": "text/css",
}
"""Every file ``/static/<name>`` serves, with its content type: the page's JavaScript
modules (``app.js`` imports the others) and its style sheet."""
_INDEX: Final = "index.html"


@cache
def _read(name: str) -> bytes:
    """A file of the package's ``static`` folder (read once per process)."""
    return files("wfe_daemon.web").joinpath("static", name).read_bytes()


def _file(name: str, content_type: str) -> web.Response:
    response = web.Response(body=_read(name), content_type=content_type, charset="utf-8")
    # The page and its files change with the daemon's version: always ask again.
    response.headers["Cache-Control"] = "no-cache"
    return response


async def _index(request: web.Request) -> web.Response:
    return _file(_INDEX, "text/html")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = STATIC.get(name)
    if content_type is None:
        raise ApiError(404, f"no static file {name!r}", [f"the files: {', '.join(STATIC)}"])
    return _file(name, content_type)


def routes(router: web.UrlDispatcher) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{name}`` (its scripts and style sheet)."""
    router.add_get("/", _index)
    router.add_get("/static/{name}", _static)
