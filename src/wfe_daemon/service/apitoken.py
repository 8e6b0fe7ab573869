"""The API's bearer token, read where the daemon and the commands that talk to it both
find it: ``WFE_API_TOKEN``, ``api_token_file``, or systemd's credential."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from wfe_daemon.config import Settings
from wfe_daemon.errors import UsageError

__all__ = ["TOKEN_NAME", "read_token"]

TOKEN_NAME = "api_token"
"""The credential read from ``$CREDENTIALS_DIRECTORY`` when no token is configured."""


def read_token(settings: Settings, environ: Mapping[str, str]) -> bytes | None:
    """The API token: ``WFE_API_TOKEN``, else ``api_token_file``, else the ``api_token``
    credential systemd passed; ``None`` when none is configured.

    Raises:
        UsageError: the configured file cannot be read, or it (or the variable) is empty
            or holds anything but visible ASCII.
    """
    if "WFE_API_TOKEN" in environ:
        token = environ["WFE_API_TOKEN"].strip()
        if not token:
            raise UsageError("WFE_API_TOKEN is set but empty")
        return _checked(token.encode("utf-8", "surrogateescape"), "WFE_API_TOKEN")
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    path: Path | None = settings.api_token_file
    if path is not None and not path.is_absolute():
        path = Path(credentials or os.getcwd()) / path
    if path is None and credentials and os.path.exists(Path(credentials) / TOKEN_NAME):
        path = Path(credentials) / TOKEN_NAME
    if path is None:
        return None
    try:
        with open(path, "rb") as fp:
            data = fp.read(4096).strip()
    except OSError as exc:
        raise UsageError(f"api_token_file: cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise UsageError(f"api_token_file: {path} is empty")
    return _checked(data, f"api_token_file: {path}")


def _checked(token: bytes, where: str) -> bytes:
    """``token`` when it is visible ASCII (what an HTTP header carries the same everywhere);
    the error never shows the token."""
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise UsageError(
            f"{where}: the token must be visible ASCII characters (no spaces, control "
            "characters or other letters), e.g. `openssl rand -hex 32`"
        )
    return token
