"""The command line's grammar: commands, their arguments, and the global options.

Global options are ``--version`` and, on every command, ``--config`` and one flag per
setting: the key with dashes (``--max-concurrent-tasks 4``), or for a true/false key a
pair (``--enable-shell`` / ``--no-enable-shell``). Flag values are text, read as the
``WFE_*`` variables are, and checked by :func:`wfe_daemon.config.load_settings`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NoReturn

from wfe_daemon.cli.runargs import add_argument_flags
from wfe_daemon.config import DEFAULTS, FLAG_KEYS, flag_name

__all__ = ["Handler", "VersionAction", "build_parser", "given_settings"]

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error: one line, exit 2 (argparse prints the whole usage otherwise)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The whole command line; each command's ``handler`` is ``handlers[name]``.

    Every command, and the program itself, take ``--config`` and the settings' flags, so
    they may stand before or after the command.
    """
    common = _Parser(add_help=False)
    add_setting_flags(common)
    parser = _Parser(prog="wfe-daemon", description="A workflow engine daemon.", parents=[common])
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        command.set_defaults(handler=handlers[name])
        return command

    add("run", "run the daemon in the foreground until SIGTERM or SIGINT")
    add("execute", "run one workflow file and print its result summary").add_argument(
        "file", type=Path
    )
    add("validate", "check a workflow file").add_argument("file", type=Path)
    for name in ("execute", "validate"):
        add_argument_flags(sub.choices[name])
    add("tasks", "list the task types").add_argument("--json", action="store_true")
    runs = add("runs", "list recent runs, newest first")
    runs.add_argument("--limit", type=_positive_int, default=20)
    runs.add_argument(
        "--status",
        type=_status,
        nargs="+",
        action="extend",
        default=[],
        metavar="S",
        help="only runs in these statuses",
    )
    runs.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only runs started since: an ISO date/time, or an age (2h, 3d, 45m)",
    )
    runs.add_argument("--json", action="store_true")
    show = add("show", "show one run with its nodes")
    show.add_argument("run_id", type=_positive_int, metavar="RUN_ID")
    show.add_argument("--json", action="store_true")
    graph = add("graph", "print the DAG of a workflow file or of a run")
    graph.add_argument("target", metavar="FILE|RUN_ID")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    add_argument_flags(graph)
    add("cancel", "cancel a run of the running daemon").add_argument(
        "run_id", type=_positive_int, metavar="RUN_ID"
    )
    retry = add("retry", "rerun what failed or was skipped in a finished run")
    retry.add_argument("run_id", type=_positive_int, metavar="RUN_ID")
    retry.add_argument(
        "--detach",
        action="store_true",
        help="let the running daemon run it (through its HTTP API) and print the new run id",
    )
    submit = add(
        "submit",
        "hand a workflow file to the running daemon (through its HTTP API when http_port is "
        "set, else its inbox) and print its run id",
    )
    submit.add_argument("file", type=Path)
    submit.add_argument(
        "--name", type=_stem, metavar="STEM", help="the stem of the result file (default: FILE's)"
    )
    submit.add_argument(
        "--idempotency-key", metavar="K", help="the workflow's idempotency_key (if it has none)"
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the run to its end, print its summary"
    )
    submit.add_argument("--json", action="store_true", help="print the daemon's whole answer")
    add_argument_flags(submit)
    sub.choices["execute"].add_argument(
        "--notify",
        action="store_true",
        help="tell the [notify] webhook of the result too, as the daemon would",
    )
    schedules = add("schedules", "list the schedules: next fire times, last run and its status")
    schedules.add_argument("--json", action="store_true")
    trigger = add("trigger", "run a schedule's workflow now, in the running daemon")
    trigger.add_argument("name", metavar="NAME", type=_stem, help="the schedule file's stem")
    add_argument_flags(trigger)
    return parser


_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def _stem(text: str) -> str:
    if not _STEM.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a safe file stem: use up to 100 letters, digits, '.', '_', "
            "'+' and '-', starting with a letter or a digit"
        )
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _status(text: str) -> str:
    from wfe_daemon.core.model import RunStatus

    try:
        return RunStatus(text.upper()).value
    except ValueError:
        names = ", ".join(status.value for status in RunStatus)
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (one of {names})") from None


_AGE = re.compile(r"(\d{1,9})\s*([smhdw])", re.IGNORECASE)
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _since(text: str) -> str:
    """An age (``2h``) or an ISO date/time (naive means local) as the stored UTC shape."""
    try:
        age = _AGE.fullmatch(text.strip())
        if age is not None:
            delta = timedelta(**{_AGE_UNITS[age[2].lower()]: int(age[1])})
            return (datetime.now(UTC) - delta).isoformat()
        return datetime.fromisoformat(text.strip()).astimezone(UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"expected an ISO date/time or an age such as 2h, 3d, 45m; got {text!r}"
        ) from None


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
    "enable_python": ("", "allow the python task"),
    "python_modules": ("PREFIXES", "comma-separated module prefixes the python task may import"),
    "executor": ("NAME", "local, or dask: remote_types run on the Dask cluster"),
    "dask_scheduler": ("ADDRESS", "the Dask scheduler's tcp:// or tls:// address, or its file"),
    "remote_types": ("TYPES", "comma-separated task types run on the Dask cluster"),
    "dask_tls_ca_file": ("PATH", "the CA of the Dask cluster's certificates"),
    "dask_tls_cert": ("PATH", "this process's certificate for the Dask cluster"),
    "dask_tls_key": ("PATH", "this process's private key for the Dask cluster"),
}


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and a flag for every setting that has a ``WFE_*`` variable.

    Absent flags leave no attribute (``SUPPRESS``), so a flag given before the command
    survives the command's own parser, which has the same flags.
    """
    group = parser.add_argument_group(
        "settings", "override the configuration file and the WFE_* variables"
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the TOML configuration file",
    )
    for key in FLAG_KEYS:
        metavar, text = _HELP.get(key, ("VALUE", "see config/wfe.toml"))
        dest = _DEST_PREFIX + key
        if isinstance(DEFAULTS[key], bool):
            group.add_argument(
                flag_name(key),
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            group.add_argument(
                flag_name(key), dest=dest, metavar=metavar, default=argparse.SUPPRESS, help=text
            )


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
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # Read here, not when the parser is built: most commands never need it.
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("wfe-daemon")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        print(f"{parser.prog} {text}")
        parser.exit()
