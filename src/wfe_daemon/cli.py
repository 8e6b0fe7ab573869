"""The command line: argparse subcommands, and the one place errors become exit codes.

Exit codes: 0 success; 1 a run that did not fully succeed, or a runtime error; 2 a usage
or configuration error, or a rejected workflow. Messages are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from wfe_daemon.errors import StoreError, UsageError, WfeError, WorkflowRejected

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error: one line, exit 2 (argparse prints the whole usage otherwise)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, metavar="PATH", help="the TOML configuration")
    parser = _Parser(prog="wfe-daemon", description="A workflow engine daemon.", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        command.set_defaults(handler=handler)
        return command

    add("run", _run, "run the daemon in the foreground until SIGTERM or SIGINT")
    add("execute", _execute, "run one workflow file and print its result summary").add_argument(
        "file", type=Path
    )
    add("validate", _validate, "check a workflow file").add_argument("file", type=Path)
    add("tasks", _tasks, "list the task types").add_argument("--json", action="store_true")
    runs = add("runs", _runs, "list recent runs, newest first")
    runs.add_argument("--limit", type=_positive_int, default=20)
    runs.add_argument("--json", action="store_true")
    show = add("show", _show, "show one run with its nodes")
    show.add_argument("run_id", type=_positive_int, metavar="RUN_ID")
    show.add_argument("--json", action="store_true")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except WorkflowRejected as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except (UsageError, WfeError) as exc:
        print(f"wfe-daemon: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, StoreError) else 2
    except KeyboardInterrupt:
        return 130


# -- helpers ---------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    from wfe_daemon.config import load_settings

    return load_settings(environ=os.environ, toml_path=args.config)


def _read(path: Path, max_size: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_size:
            raise WorkflowRejected([f"file is {size} bytes, over max_file_size {max_size}"])
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _async(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio

    return asyncio.run(fn(*args))


# -- commands --------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from wfe_daemon.daemon import serve
    from wfe_daemon.logs import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    return int(_async(serve, settings))


def _execute(args: argparse.Namespace) -> int:
    from wfe_daemon.logs import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level, sys.stderr)
    try:
        data: bytes | None = _read(args.file, settings.max_file_size)
        problem = None
    except WorkflowRejected as exc:  # too big to read: still a REJECTED run with a summary
        data, problem = None, "; ".join(exc.problems)
    summary = _async(_execute_async, settings, data, args.file.resolve(), problem)
    _print_json(summary)
    return {"SUCCESS": 0, "REJECTED": 2}.get(summary["status"], 1)


async def _execute_async(
    settings: Any, data: bytes | None, path: Path, problem: str | None
) -> dict[str, Any]:
    from wfe_daemon.engine import Engine
    from wfe_daemon.registry import TaskRegistry
    from wfe_daemon.services import open_services
    from wfe_daemon.store import Store
    from wfe_daemon.submission import submit

    registry = TaskRegistry.load()
    async with Store.open(settings.db_path) as store, open_services(settings) as services:
        engine = Engine(registry, store, settings, services=services)
        summary = await submit(engine, data, source=path.name, source_path=path, problem=problem)
        store.mark_settled(summary["run_id"])  # published on stdout; nothing left to recover
        return summary


def _validate(args: argparse.Namespace) -> int:
    from wfe_daemon.model import parse_workflow
    from wfe_daemon.registry import TaskRegistry

    settings = _settings(args)
    parse_workflow(_read(args.file, settings.max_file_size), TaskRegistry.load())
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from wfe_daemon.registry import TaskRegistry

    _settings(args)  # a bad configuration stops every command, this one too
    described = TaskRegistry.load().describe()
    if args.json:
        _print_json(described)
        return 0
    for task in described:
        print(f"{task['type']:<18} {task['category']:<8} {task['description']}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    runs = _async(_query, _settings(args), "list_runs", args.limit)
    if args.json:
        _print_json(runs)
        return 0
    print(f"{'RUN':>6}  {'STATUS':<16} {'STARTED':<26} {'DURATION':>9}  WORKFLOW")
    for run in runs:
        duration = "" if run["duration"] is None else f"{run['duration']:.3f}s"
        print(f"{run['id']:>6}  {run['status']:<16} {run['started_at'] or '':<26} "
              f"{duration:>9}  {run['name']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    run = _async(_query, _settings(args), "get_run", args.run_id)
    if run is None:
        raise StoreError(f"no run {args.run_id}")
    if args.json:
        _print_json(run)
        return 0
    print(f"run {run['id']}: {run['name']} [{run['status']}]")
    print(f"source: {run['source'] or '-'}  started: {run['started_at']}  "
          f"duration: {run['duration'] if run['duration'] is not None else '-'}")
    errors = (run["result_summary"] or {}).get("errors") or []
    for error in errors:
        print(f"  error: {error}")
    for node in run["nodes"]:
        detail = node["error"] or node["reason"] or ""
        print(f"  {node['node_id']:<24} {node['type']:<16} {node['status']:<10} {detail}")
    return 0


async def _query(settings: Any, method: str, *args: Any) -> Any:
    from wfe_daemon.store import Store

    async with Store.open(settings.db_path) as store:
        return await getattr(store, method)(*args)
