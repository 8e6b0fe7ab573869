"""Settings: defaults < TOML file < ``WFE_*`` environment < command-line flags.

Configuration is data: :func:`load_settings` reads every source once, checks every value
and returns a frozen :class:`Settings`. The environment is passed in, never read here.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from wfe_daemon.core.importpath import parse_prefixes
from wfe_daemon.core.webhook import (
    NotifySettings,
    ValueInvalid,
    notify_env,
    notify_table,
    show_value,
)
from wfe_daemon.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "DEFAULT_CONFIG_FILE",
    "FLAG_KEYS",
    "NotifySettings",
    "Settings",
    "flag_name",
    "load_settings",
]

DEFAULT_CONFIG_FILE: Final = Path("config/wfe.toml")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_PATH_KEYS: Final = ("inbox", "outbox", "db_path", "data_dir")
_TLS_KEYS: Final = ("dask_tls_ca_file", "dask_tls_cert", "dask_tls_key")
EXECUTORS: Final = ("local", "dask")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the daemon, checked; build it with :func:`load_settings`.

    Paths are made absolute against the working directory at construction, and
    ``task_limits`` is copied into a read-only mapping. ``dataclasses.replace`` works.
    Only :func:`load_settings` checks ranges; direct construction trusts its arguments.
    """

    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    db_path: Path = Path("data/workflows.db")
    data_dir: Path = Path("data")
    max_concurrent_tasks: int = 16
    max_concurrent_workflows: int = 10
    task_limits: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    task_timeout: float = 300.0
    max_workflow_duration: float = 3600.0
    max_file_size: int = 10 * 1024 * 1024
    max_output_size: int = 16 * 1024 * 1024
    """Bytes of one node's output, encoded as JSON; a larger output fails the node."""
    shutdown_grace: float = 20.0
    enable_shell: bool = False
    log_level: str = "INFO"
    http_port: int = 0
    """Port of the HTTP server (API, page, ``/metrics``, ``/healthz``); 0 is off."""
    http_host: str = "127.0.0.1"
    """Address the HTTP server binds; any but loopback needs an API token."""
    api_token_file: Path | None = None
    """File holding the API's bearer token (relative: to ``$CREDENTIALS_DIRECTORY``)."""
    metrics_port: int = 0
    """Deprecated alias of ``http_port``."""
    history_retention_days: int = 0
    """Runs finished longer ago than this, and their inbox files, are deleted; 0 keeps all."""
    http_deny_networks: tuple[str, ...] = ()
    """CIDRs, ``loopback``, ``private``: refused to ``http_get``/``http_post`` (and link-local)."""
    secrets_dir: Path | None = None
    """One file per secret for ``{{ secrets.NAME }}``; default ``$CREDENTIALS_DIRECTORY``."""
    schedules_dir: Path | None = None
    """The folder of scheduled workflows; ``None``: ``schedules`` beside the inbox."""
    max_catchup: int = 10
    """Missed slots a ``catchup: all`` schedule fires at most (the latest ones)."""
    notify: NotifySettings = field(default_factory=NotifySettings)
    """The webhook told of runs that end FAILED or PARTIAL_SUCCESS (``[notify]``)."""
    enable_python: bool = False
    """Allow the ``python`` task (it runs any importable code)."""
    python_modules: tuple[str, ...] = ()
    """Module prefixes the ``python`` task may import; empty: any module."""
    executor: str = "local"
    """Where attempts of ``remote_types`` run: ``local`` (all here) or ``dask``."""
    dask_scheduler: str = ""
    """The Dask scheduler: ``tcp://host:port``, ``tls://host:port`` or a scheduler file."""
    remote_types: tuple[str, ...] = ()
    """Task types whose attempts run on the Dask cluster (``executor = "dask"``)."""
    dask_tls_ca_file: Path | None = None
    """TLS to the Dask cluster: the CA that signed the scheduler's and workers' certificates."""
    dask_tls_cert: Path | None = None
    """TLS to the Dask cluster: this daemon's certificate."""
    dask_tls_key: Path | None = None
    """TLS to the Dask cluster: this daemon's private key."""

    def __post_init__(self) -> None:
        for name in _PATH_KEYS:
            path = Path(getattr(self, name)).expanduser()
            object.__setattr__(self, name, Path(os.path.abspath(path)))
        object.__setattr__(self, "task_limits", MappingProxyType(dict(self.task_limits)))
        object.__setattr__(self, "http_deny_networks", tuple(self.http_deny_networks))
        for name in ("secrets_dir", *_TLS_KEYS):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(os.path.abspath(getattr(self, name))))
        object.__setattr__(self, "remote_types", tuple(self.remote_types))
        object.__setattr__(self, "python_modules", tuple(self.python_modules))
        if self.schedules_dir is None:
            object.__setattr__(self, "schedules_dir", self.inbox.parent / "schedules")
        else:
            path = Path(os.path.abspath(Path(self.schedules_dir).expanduser()))
            object.__setattr__(self, "schedules_dir", path)

    @property
    def dask_tls(self) -> bool:
        """Whether the daemon talks to the Dask cluster over TLS (its three files set)."""
        return self.dask_tls_ca_file is not None

    @property
    def schedules(self) -> Path:
        """The folder of scheduled workflows: ``schedules_dir``, else ``schedules`` beside
        the inbox."""
        assert self.schedules_dir is not None  # set by __post_init__
        return self.schedules_dir


def _default_of(f: Any) -> Any:
    """The default value of a dataclass field."""
    return f.default_factory() if callable(f.default_factory) else f.default


#: The built-in defaults by TOML key (paths still relative to the working directory).
DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {f.name: _default_of(f) for f in fields(Settings)}
)


_INT_TEXT: Final = re.compile(r"[+-]?[0-9]+")
_BOOL_TEXT: Final = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}


def _as_int(value: object, text_ok: bool) -> int:
    if text_ok and isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueInvalid(f"must be an integer, got {show_value(value)}")
    return value


def _as_float(value: object, text_ok: bool) -> float:
    number = value
    if text_ok and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise ValueInvalid(f"must be a number, got {show_value(value)}")
    return float(number)


def _as_bool(value: object, text_ok: bool) -> bool:
    if text_ok and isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    if not isinstance(value, bool):
        raise ValueInvalid(f"must be true or false, got {show_value(value)}")
    return value


def _as_path(value: object, text_ok: bool) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ValueInvalid(f"must be a non-empty path string, got {show_value(value)}")
    return Path(value)


def _as_optional_path(value: object, text_ok: bool) -> Path | None:
    if value == "":
        return None
    return _as_path(value, text_ok)


def _as_host(value: object, text_ok: bool) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueInvalid(f"must be an IP address or host name, got {show_value(value)}")
    return value.strip()


def _as_log_level(value: object, text_ok: bool) -> str:
    if not isinstance(value, str) or value.strip().upper() not in LOG_LEVELS:
        raise ValueInvalid(f"must be one of {', '.join(LOG_LEVELS)}, got {show_value(value)}")
    return value.strip().upper()


def _as_task_limits(value: object, text_ok: bool) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise ValueInvalid(f"must be a table of task type = limit, got {show_value(value)}")
    limits: dict[str, int] = {}
    for task_type, limit in value.items():
        if not isinstance(task_type, str) or not task_type:
            raise ValueInvalid(f"task types must be non-empty strings, got {show_value(task_type)}")
        try:
            limits[task_type] = _as_int(limit, text_ok)
        except ValueInvalid as exc:
            raise ValueInvalid(str(exc), f".{task_type}") from None
        if limits[task_type] < 1:
            raise ValueInvalid(f"must be >= 1, got {limits[task_type]}", f".{task_type}")
    return MappingProxyType(limits)


#: Names ``http_deny_networks`` accepts besides CIDRs (``wfe_daemon.tasks.http.task`` expands them).
NETWORK_NAMES: Final = ("loopback", "private")


def _as_networks(value: object, text_ok: bool) -> tuple[str, ...]:
    if text_ok and isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueInvalid(f"must be a list of CIDR networks or names, got {show_value(value)}")
    import ipaddress

    networks: list[str] = []
    for item in value:
        text = item.strip().lower() if isinstance(item, str) else ""
        if text in NETWORK_NAMES:
            networks.append(text)
            continue
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueInvalid(
                f"must be CIDR networks (like 10.0.0.0/8) or {', '.join(NETWORK_NAMES)},"
                f" got {show_value(item)}"
            ) from None
    return tuple(dict.fromkeys(networks))


def _as_executor(value: object, text_ok: bool) -> str:
    if not isinstance(value, str) or value.strip().lower() not in EXECUTORS:
        raise ValueInvalid(f"must be one of {', '.join(EXECUTORS)}, got {show_value(value)}")
    return value.strip().lower()


def _as_text(value: object, text_ok: bool) -> str:
    if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
        raise ValueInvalid(f"must be a string without spaces, got {show_value(value)}")
    return value.strip()


def _as_names(value: object, text_ok: bool) -> tuple[str, ...]:
    if text_ok and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise ValueInvalid(f"must be a list of task types, got {show_value(value)}")
    return tuple(dict.fromkeys(item.strip() for item in value))


def _as_notify(value: object, text_ok: bool) -> NotifySettings:
    return notify_table(value, text_ok)


def _num(v: float) -> str:
    """A number as the user likely wrote it: ``-1``, not ``-1.0``."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be >= {low}, got {_num(v)}"


def _above(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v > low else f"must be > {low}, got {_num(v)}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else f"must be a port 0..65535 (0 = off), got {v}"


@dataclass(frozen=True, slots=True)
class _Spec:
    """How to read one key: a converter, an optional range check, and its env variable."""

    convert: Callable[[object, bool], Any]
    check: Callable[[Any], str | None] | None = None
    env: bool = True


_SPECS: Final[Mapping[str, _Spec]] = MappingProxyType(
    {
        "inbox": _Spec(_as_path),
        "outbox": _Spec(_as_path),
        "db_path": _Spec(_as_path),
        "data_dir": _Spec(_as_path),
        "max_concurrent_tasks": _Spec(_as_int, _at_least(1)),
        "max_concurrent_workflows": _Spec(_as_int, _at_least(1)),
        "task_limits": _Spec(_as_task_limits, env=False),
        "task_timeout": _Spec(_as_float, _above(0)),
        "max_workflow_duration": _Spec(_as_float, _above(0)),
        "max_file_size": _Spec(_as_int, _at_least(1)),
        "max_output_size": _Spec(_as_int, _at_least(1)),
        "shutdown_grace": _Spec(_as_float, _at_least(0)),
        "enable_shell": _Spec(_as_bool),
        "log_level": _Spec(_as_log_level),
        "http_port": _Spec(_as_int, _port),
        "http_host": _Spec(_as_host),
        "api_token_file": _Spec(_as_optional_path),
        "metrics_port": _Spec(_as_int, _port),
        "history_retention_days": _Spec(_as_int, _at_least(0)),
        "http_deny_networks": _Spec(_as_networks),
        "secrets_dir": _Spec(_as_optional_path),
        "schedules_dir": _Spec(_as_optional_path),
        "max_catchup": _Spec(_as_int, _at_least(1)),
        "notify": _Spec(_as_notify, env=False),  # WFE_NOTIFY_*: notify_env
        "enable_python": _Spec(_as_bool),
        "python_modules": _Spec(parse_prefixes),
        "executor": _Spec(_as_executor),
        "dask_scheduler": _Spec(_as_text),
        "remote_types": _Spec(_as_names),
        "dask_tls_ca_file": _Spec(_as_optional_path),
        "dask_tls_cert": _Spec(_as_optional_path),
        "dask_tls_key": _Spec(_as_optional_path),
    }
)


#: The keys the command line sets with a flag: every key with a ``WFE_*`` variable.
FLAG_KEYS: Final = tuple(key for key, spec in _SPECS.items() if spec.env)


def flag_name(key: str) -> str:
    """The command-line flag of ``key``: ``--max-concurrent-tasks`` for ``max_concurrent_tasks``."""
    return "--" + key.replace("_", "-")


def _convert(key: str, value: object, text_ok: bool, where: str) -> Any:
    """Convert and check one value; ``where`` prefixes the error (source, key or both)."""
    spec = _SPECS[key]
    try:
        result = spec.convert(value, text_ok)
        problem = spec.check(result) if spec.check else None
        if problem:
            raise ValueInvalid(problem)
    except ValueInvalid as exc:
        raise ConfigError(f"config: {where}{exc.subkey}: {exc}") from None
    return result


def _unknown_key(source: str, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_SPECS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"config: {source}: unknown key {key!r}{hint}")


_MAX_CONFIG_BYTES = 1 << 20


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, turning every failure into a one-line ConfigError.

    At most ``_MAX_CONFIG_BYTES`` are read, so a device (``/dev/zero``) fails instead of
    reading forever; a pipe (``--config <(...)``) still works.
    """
    try:
        with path.open("rb") as fp:
            data = fp.read(_MAX_CONFIG_BYTES + 1)
        if len(data) > _MAX_CONFIG_BYTES:
            raise ConfigError(f"config: {path}: larger than {_MAX_CONFIG_BYTES} bytes")
        return tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"config: {path}: cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {path}: not valid UTF-8: {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"config: {path}: invalid TOML: {message}") from exc


def _choose_file(toml_path: Path | None, environ: Mapping[str, str]) -> Path | None:
    if toml_path is not None:
        return Path(toml_path)
    if environ.get("WFE_CONFIG"):
        return Path(environ["WFE_CONFIG"])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
) -> Settings:
    """Read and check every setting, highest precedence last.

    Sources, each overriding the one before: the built-in :data:`DEFAULTS`; one TOML
    file (``toml_path``, else ``$WFE_CONFIG``, else ``config/wfe.toml`` when it exists);
    the ``WFE_<KEY>`` variables of ``environ``; then ``flags``. A key a source sets
    replaces the value below it as a whole, ``task_limits`` included.

    Args:
        flags: Settings given on the command line, by TOML key name. Values may be
            typed or strings (parsed as the environment's are); ``None`` means not given.
            An error names the flag (``--max-concurrent-tasks``), see :func:`flag_name`.
        environ: The environment, usually ``os.environ``; ``None`` means empty. Other
            ``WFE_*`` variables are ignored; an empty ``WFE_CONFIG`` counts as unset.
            ``$CREDENTIALS_DIRECTORY`` (set by systemd) is ``secrets_dir`` unless a
            source sets that to a folder.
        toml_path: The file named by ``--config``; it must exist.

    Returns:
        The settings, with paths made absolute against the current working directory.

    Raises:
        ConfigError: A file is missing, unreadable or not TOML; a key is unknown; or a
            value has the wrong type or is out of range. The message is one line that
            names the source and the key, e.g.
            ``config: WFE_MAX_CONCURRENT_TASKS: must be >= 1, got -3``.
    """
    environ = environ if environ is not None else {}
    values: dict[str, Any] = {}
    path = _choose_file(toml_path, environ)
    if path is not None:
        for key, value in _read_toml(path).items():
            if key not in _SPECS:
                raise _unknown_key(str(path), key)
            values[key] = _convert(key, value, False, f"{path}: {key}")
    for key, spec in _SPECS.items():
        name = f"WFE_{key.upper()}"
        if spec.env and name in environ:
            values[key] = _convert(key, environ[name], True, name)
    values["notify"] = notify_env(values.get("notify", NotifySettings()), environ)
    for key, value in (flags or {}).items():
        if key not in _SPECS:
            raise _unknown_key("flags", key)
        if value is not None:
            values[key] = _convert(key, value, True, flag_name(key) if key in FLAG_KEYS else key)
    if values.get("secrets_dir") is None and environ.get("CREDENTIALS_DIRECTORY"):
        values["secrets_dir"] = Path(environ["CREDENTIALS_DIRECTORY"])  # systemd's credentials
    _check_executor(values)
    return Settings(**values)


def _check_executor(values: Mapping[str, Any]) -> None:
    """The Dask executor's settings taken together (each one is checked alone above)."""
    tls = [key for key in _TLS_KEYS if values.get(key) is not None]
    if tls and len(tls) < len(_TLS_KEYS):
        missing = ", ".join(key for key in _TLS_KEYS if key not in tls)
        raise ConfigError(f"config: {tls[0]}: TLS needs all three files; also set {missing}")
    if values.get("executor", "local") != "dask":
        return
    scheduler = values.get("dask_scheduler", "")
    if not scheduler:
        raise ConfigError(
            'config: dask_scheduler: executor = "dask" needs the scheduler\'s address'
            " (tcp://host:8786) or scheduler file"
        )
    if scheduler.startswith("tls://") and not tls:
        raise ConfigError(
            f"config: dask_scheduler: {scheduler} is a TLS address: set dask_tls_ca_file,"
            " dask_tls_cert and dask_tls_key"
        )
    if scheduler.startswith("tcp://") and tls:
        raise ConfigError(
            f"config: dask_scheduler: the TLS files are set but {scheduler} is not a TLS"
            " address: use tls://"
        )
    for key in tls:  # read at each connect: a missing file must stop the start, not retry
        try:
            Path(values[key]).open("rb").close()
        except OSError as exc:
            raise ConfigError(
                f"config: {key}: cannot read {values[key]}: {exc.strerror or exc}"
            ) from None
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ConfigError(
            'config: executor: "dask" needs the distributed package: install wfe-daemon[dask]'
        )
