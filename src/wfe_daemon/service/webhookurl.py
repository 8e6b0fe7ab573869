"""The ``[notify]`` webhook's URL, read and checked before anything runs: from ``url`` or
the file ``url_file`` names, with ``[notify.headers]``, as httpx will send them. A value
that does not fit is a :class:`~wfe_daemon.errors.ConfigError` (exit 2) whose message never
shows the URL (its path or query may hold a token)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from wfe_daemon.core.webhook import NotifySettings, is_webhook_url
from wfe_daemon.errors import ConfigError
from wfe_daemon.service.reading import NotRegularFile, open_regular, read_capped

if TYPE_CHECKING:
    import httpx

__all__ = ["origin", "prepared", "webhook_url"]


def webhook_url(notify: NotifySettings, environ: Mapping[str, str]) -> str | None:
    """The webhook: ``url``, else the URL ``url_file`` holds (one line; a relative path is
    read from ``$CREDENTIALS_DIRECTORY``, else the working directory); ``None`` when
    neither. Both are checked alike, headers included (:func:`prepared`).

    Raises:
        ConfigError: the file is not a regular file, cannot be read, is empty, or holds
            anything but one http(s) URL (the message never shows what it holds); the URL
            or a header cannot be sent.
    """
    if notify.url is not None or notify.url_file is None:
        if notify.url is not None:
            prepared(notify, notify.url, "notify.url")
        return notify.url
    path = notify.url_file
    if not path.is_absolute():
        path = Path(environ.get("CREDENTIALS_DIRECTORY") or os.getcwd()) / path
    where = "config: notify.url_file"
    try:
        # A named pipe or a device would block start-up: refused without reading.
        with open_regular(path, follow_symlinks=True) as (fd, _):
            data = read_capped(fd, 65536)
        text = (data or b"").decode("utf-8").strip()
    except NotRegularFile as exc:
        raise ConfigError(f"{where}: {path} is not a regular file ({exc.kind})") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
    if data is None:
        raise ConfigError(f"{where}: {path} is over 64 KiB")
    if not text:
        raise ConfigError(f"{where}: {path} is empty")
    if not is_webhook_url(text):
        raise ConfigError(
            f"{where}: {path} must hold one http:// or https:// URL with a host and a valid"
            " port, on one line (its contents are not shown)"
        )
    prepared(notify, text, f"notify.url_file: {path}")
    return text


def prepared(notify: NotifySettings, url: str, where: str) -> tuple[httpx.URL, httpx.Headers]:
    """``url`` parsed and the headers of each POST, as httpx sends them.

    Raises:
        ConfigError: httpx refuses the URL or a header (``where`` names the setting).
    """
    import httpx

    from wfe_daemon import __version__

    try:
        if not is_webhook_url(url):  # httpx takes a port of 99999
            raise ValueError(url)
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise ConfigError(
            f"config: {where}: not a URL that can be sent (the value is not shown)"
        ) from None
    headers = {"Content-Type": "application/json", "User-Agent": f"wfe-daemon/{__version__}"}
    try:
        return parsed, httpx.Headers({**headers, **notify.headers})
    except (TypeError, ValueError):  # UnicodeEncodeError: not ASCII
        raise ConfigError(
            "config: notify.headers: a header cannot be sent (values are not shown)"
        ) from None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what logs show of the webhook."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
