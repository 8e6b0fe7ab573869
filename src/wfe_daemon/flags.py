"""The command line's global options: ``--version`` and one flag per setting.

A setting's flag is its key with dashes (``--max-concurrent-tasks 4``); a true/false key
gets a pair (``--enable-shell`` / ``--no-enable-shell``). Values are text, read as the
``WFE_*`` variables are, and checked by :func:`wfe_daemon.config.load_settings`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from wfe_daemon.config import DEFAULTS, FLAG_KEYS, flag_name

_DEST_PREFIX: Final = "setting_"

_HELP: Final[Mapping[str, tuple[str, str]]] = {
    "inbox": ("PATH", "the watched folder"),
    "outbox": ("PATH", "where results are written"),
    "db_path": ("PATH", "the SQLite database"),
    "data_dir": ("PATH", "the only folder file tasks may touch"),
    "max_concurrent_tasks": ("N", "nodes running at once, all workflows together"),
    "max_concurrent_workflows": ("N", "workflows running at once"),
    "task_timeout": ("SECONDS", "a node's timeout when neither it nor its type sets one"),
    "max_workflow_duration": ("SECONDS", "a run's timeout unless the workflow sets one"),
    "max_file_size": ("BYTES", "the largest workflow file taken"),
    "shutdown_grace": ("SECONDS", "what running nodes get after SIGTERM or SIGINT"),
    "enable_shell": ("", "allow the shell task"),
    "log_level": ("LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    "metrics_port": ("PORT", "the port on 127.0.0.1 for /metrics and /healthz; 0 is off"),
    "history_retention_days": ("DAYS", "the days of history kept; 0 keeps everything"),
    "http_deny_networks": ("NETS", "comma-separated networks http_get refuses"),
}


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and a flag for every setting that has a ``WFE_*`` variable.

    Absent flags leave no attribute (``SUPPRESS``), so a flag given before the command
    survives the command's own parser, which has the same flags.
    """
    group = parser.add_argument_group(
        "settings", "override the configuration file and the WFE_* variables"
    )
    group.add_argument("--config", type=Path, metavar="PATH", default=argparse.SUPPRESS,
                       help="the TOML configuration file")
    for key in FLAG_KEYS:
        metavar, text = _HELP.get(key, ("VALUE", "see config/wfe.toml"))
        dest = _DEST_PREFIX + key
        if isinstance(DEFAULTS[key], bool):
            group.add_argument(flag_name(key), dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag_name(key), dest=dest, metavar=metavar,
                               default=argparse.SUPPRESS, help=text)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by TOML key, for ``load_settings(flags=...)``."""
    return {
        key: getattr(args, _DEST_PREFIX + key)
        for key in FLAG_KEYS
        if hasattr(args, _DEST_PREFIX + key)
    }


class VersionAction(argparse.Action):
    """``--version``: print the installed package's version on stdout and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        # Read here, not when the parser is built: most commands never need it.
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("wfe-daemon")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        print(f"{parser.prog} {text}")
        parser.exit()
