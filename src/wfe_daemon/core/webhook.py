"""The ``[notify]`` settings: where the summaries of failed runs are POSTed, and how hard
to try. Pure: :func:`notify_table` reads the TOML table, :func:`notify_env` applies the
``WFE_NOTIFY_*`` variables; ``wfe_daemon.config`` calls both."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from wfe_daemon.core.model import RunStatus
from wfe_daemon.errors import ConfigError

__all__ = [
    "MAX_DELAY_S",
    "NotifySettings",
    "ValueInvalid",
    "notify_env",
    "notify_table",
    "show_value",
]

DEFAULT_ON: Final = ("FAILED", "PARTIAL_SUCCESS")
MAX_DELAY_S: Final = 300.0
"""The longest wait between two tries of one notification, ``Retry-After`` included."""
FINAL_STATUSES: Final = tuple(status.value for status in RunStatus if status.is_final)


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """The ``[notify]`` table: the webhook that gets the summary of runs ending in ``on``.

    ``url`` is the webhook itself, or ``url_file`` a file holding it (relative: read from
    ``$CREDENTIALS_DIRECTORY``); neither means no notifications. ``headers`` go with each
    POST. One notification is tried up to ``attempts`` times, each within ``timeout``
    seconds, ``retry_delay`` seconds apart at first and twice as long each time after.
    """

    url: str | None = None
    url_file: Path | None = None
    on: tuple[str, ...] = DEFAULT_ON
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    attempts: int = 10
    retry_delay: float = 1.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", tuple(self.on))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def enabled(self) -> bool:
        """Whether a webhook is configured."""
        return self.url is not None or self.url_file is not None


class ValueInvalid(ValueError):
    """Raised when a configuration value does not fit its key (``[notify]``'s here, every
    key's in ``config``); ``subkey`` narrows the key (``.on``, ``.http_get``)."""

    def __init__(self, problem: str, subkey: str = "") -> None:
        super().__init__(problem)
        self.subkey = subkey


def show_value(value: object) -> str:
    """A short one-line rendering of a bad configuration value."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_webhook_url(text: str) -> bool:
    """Whether ``text`` is an http or https URL with a host and a valid port, on one line
    without spaces (what ``url``, ``WFE_NOTIFY_URL`` and the file of ``url_file`` must be)."""
    from urllib.parse import urlsplit

    if not text.isprintable() or any(char.isspace() for char in text):
        return False
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port  # .port raises on "99999" or "0x"
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host) and port != 0


def _url(value: object, text_ok: bool) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str) or not is_webhook_url(value):
        # The URL may hold a token: never shown.
        raise ValueInvalid(
            "must be an http:// or https:// URL with a host and a valid port, on one line"
            " (the value is not shown)"
        )
    return value


def _path(value: object, text_ok: bool) -> Path | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueInvalid(f"must be a path string, got {show_value(value)}")
    return Path(value)


def _statuses(value: object, text_ok: bool) -> tuple[str, ...]:
    if text_ok and isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueInvalid(f"must be a list of run statuses, got {show_value(value)}")
    if not value:
        # An empty list would turn notifications off unnoticed: that is leaving url unset.
        raise ValueInvalid(
            "must name at least one run status (to send nothing, leave url and url_file unset)"
        )
    statuses = []
    for item in value:
        status = item.strip().upper() if isinstance(item, str) else None
        if status not in FINAL_STATUSES:
            known = ", ".join(FINAL_STATUSES)
            raise ValueInvalid(f"must be run statuses ({known}), got {show_value(item)}")
        statuses.append(status)
    return tuple(dict.fromkeys(statuses))


_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _headers(value: object, text_ok: bool) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ValueInvalid(f"must be a table of header name = value, got {show_value(value)}")
    for name, item in value.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueInvalid(f"not a header name: {show_value(name)}")
        if not isinstance(item, str) or not (item.isascii() and item.isprintable()):
            # HTTP header values are ASCII: "café" could not be sent.
            raise ValueInvalid(
                "must be a string of printable ASCII on one line (the value is not shown)",
                f".{name}",
            )
    return MappingProxyType(dict(value))


def _float(value: object, text_ok: bool) -> float:
    number = value
    if text_ok and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise ValueInvalid(f"must be a number, got {show_value(value)}")
    if number <= 0:
        raise ValueInvalid(f"must be > 0, got {number:g}")
    return float(number)


def _delay(value: object, text_ok: bool) -> float:
    number = _float(value, text_ok)
    if number > MAX_DELAY_S:
        raise ValueInvalid(f"must be <= {MAX_DELAY_S:g} (seconds), got {number:g}")
    return number


def _attempts(value: object, text_ok: bool) -> int:
    number = value
    if text_ok and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = int(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueInvalid(f"must be an integer, got {show_value(value)}")
    if number < 1:
        raise ValueInvalid(f"must be >= 1, got {number}")
    return number


_KEYS: Final[Mapping[str, Callable[[object, bool], Any]]] = MappingProxyType(
    {
        "url": _url,
        "url_file": _path,
        "on": _statuses,
        "headers": _headers,
        "attempts": _attempts,
        "retry_delay": _delay,
        "timeout": _float,
    }
)
_ENV: Final = {"url": "WFE_NOTIFY_URL", "url_file": "WFE_NOTIFY_URL_FILE", "on": "WFE_NOTIFY_ON"}


def notify_table(value: object, text_ok: bool = False) -> NotifySettings:
    """The ``[notify]`` table read into settings.

    Raises:
        ValueInvalid: a key is unknown or a value does not fit (``subkey`` names it), or
            both ``url`` and ``url_file`` are given.
    """
    if not isinstance(value, Mapping):
        raise ValueInvalid(
            f"must be a table (url, url_file, on, headers...), got {show_value(value)}"
        )
    given: dict[str, Any] = {}
    for key, item in value.items():
        read = _KEYS.get(key)
        if read is None:
            raise ValueInvalid(f"unknown key (known: {', '.join(_KEYS)})", f".{key}")
        try:
            given[key] = read(item, text_ok)
        except ValueInvalid as exc:
            raise ValueInvalid(str(exc), f".{key}{exc.subkey}") from None
    if given.get("url") is not None and given.get("url_file") is not None:
        raise ValueInvalid("give url or url_file, not both")
    return NotifySettings(**given)


def notify_env(notify: NotifySettings, environ: Mapping[str, str]) -> NotifySettings:
    """``notify`` with what ``WFE_NOTIFY_URL``, ``WFE_NOTIFY_URL_FILE`` and ``WFE_NOTIFY_ON``
    set; a webhook given here replaces both ``url`` and ``url_file`` of the file.

    Raises:
        ConfigError: a value does not fit; the message names the variable.
    """
    changes: dict[str, Any] = {}
    for key, name in _ENV.items():
        if name in environ:
            try:
                changes[key] = _KEYS[key](environ[name], True)
            except ValueInvalid as exc:
                raise ConfigError(f"config: {name}: {exc}") from None
    if changes.get("url") is not None and changes.get("url_file") is not None:
        raise ConfigError("config: WFE_NOTIFY_URL: give it or WFE_NOTIFY_URL_FILE, not both")
    if "url" in changes or "url_file" in changes:
        changes = {"url": None, "url_file": None, **changes}
    return replace(notify, **changes) if changes else notify
