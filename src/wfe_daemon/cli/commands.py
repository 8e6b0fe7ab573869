"""The command line: what each command does, and the one place errors become exit codes.

The grammar (commands, arguments, flags) is in :mod:`wfe_daemon.cli.arguments`.

Exit codes: 0 success; 1 a run that did not fully succeed, or a runtime error; 2 a usage
or configuration error, or a rejected workflow. Messages are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from wfe_daemon.errors import StoreCorrupt, StoreError, UsageError, WfeError, WorkflowRejected

if TYPE_CHECKING:
    from wfe_daemon.cli.progress import LiveLine
    from wfe_daemon.core.model import WorkflowDef
    from wfe_daemon.core.records import RunRecord
    from wfe_daemon.core.summary import RunSummary
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.runtime.registry import TaskRegistry
    from wfe_daemon.store.database import Store

SIGPIPE_STATUS = 128 + 13
"""The exit status when stdout's reader went away (``wfe-daemon runs | head``).

What a shell reports for ``cat`` or ``seq`` killed by SIGPIPE there, so ``set -o pipefail``
sees the same, and it is neither a runtime error (1) nor a usage error (2). Python ignores
SIGPIPE (the daemon's sockets need that), so it arrives as ``BrokenPipeError`` instead.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from wfe_daemon.cli.streams import use_whole_writes

    use_whole_writes()
    try:
        code = _main(argv)
        sys.stdout.flush()  # a buffered tail would otherwise fail at exit, outside this try
        return code
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return SIGPIPE_STATUS


def _main(argv: Sequence[str] | None) -> int:
    from wfe_daemon.cli.arguments import build_parser

    handlers = {
        "run": _run,
        "execute": _execute,
        "validate": _validate,
        "tasks": _tasks,
        "runs": _runs,
        "show": _show,
        "graph": _graph,
        "cancel": _cancel,
        "retry": _retry,
        "submit": _submit,
        "schedules": _schedules,
        "trigger": _trigger,
    }
    args = build_parser(handlers).parse_args(argv)
    try:
        code: int = _call(args)
        return code
    except WorkflowRejected as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return _status_of(exc)
    except (UsageError, WfeError) as exc:
        print(f"wfe-daemon: {exc}", file=sys.stderr)
        return _status_of(exc)
    except KeyboardInterrupt as exc:
        return _status_of(exc)


def _status_of(exc: BaseException) -> int:
    """The exit status for ``exc``, raised by a command (an exception group: its first error
    of ours)."""
    while isinstance(exc, BaseExceptionGroup):
        ours = exc.subgroup(lambda inner: isinstance(inner, WfeError))
        exc = (ours or exc).exceptions[0]
    if isinstance(exc, StoreCorrupt):
        return 3  # no retry heals it: the unit does not restart on it
    if isinstance(exc, StoreError):
        return 1
    if isinstance(exc, WfeError):
        return 2  # a usage or configuration error, or a rejected workflow
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


# -- helpers ---------------------------------------------------------------------------------


def _call(args: argparse.Namespace) -> int:
    """Run the command; an error of ours raised inside a task group comes out alone."""
    try:
        code: int = args.handler(args)
        return code
    except BaseExceptionGroup as group:
        ours = group.subgroup(lambda exc: isinstance(exc, WfeError))
        if ours is None:
            raise
        first = ours.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _settings(args: argparse.Namespace) -> Any:
    from wfe_daemon.cli.arguments import given_settings
    from wfe_daemon.config import load_settings

    return load_settings(
        flags=given_settings(args), environ=os.environ, toml_path=getattr(args, "config", None)
    )


def _read(path: Path, max_size: int) -> bytes:
    """The bytes of the regular file ``path`` (a symlink to one will do), read by
    :func:`~wfe_daemon.service.reading.read_file`: never more than ``max_size`` are read."""
    from wfe_daemon.service.reading import NotRegularFile, read_file

    try:
        contents = read_file(path, max_size, follow_symlinks=True)
    except NotRegularFile as exc:
        raise UsageError(f"cannot read {path}: not a regular file ({exc.kind})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if contents.data is not None:
        return contents.data
    if contents.stat.st_size > max_size:
        raise WorkflowRejected(
            [f"file is {contents.stat.st_size} bytes, over max_file_size {max_size}"]
        )
    raise WorkflowRejected([f"file is over max_file_size {max_size}"])


def _print_json(value: Any) -> None:
    from wfe_daemon.service.outbox import pretty_json

    sys.stdout.write(pretty_json(value).decode())


def _async(fn: Callable[..., Any], *args: Any) -> Any:
    from wfe_daemon.runtime.eventloop import run

    try:
        return run(fn(*args))
    finally:
        # The last log lines' flush was due on the loop, which may have ended first: they
        # must reach stderr before what the command prints next on stdout (``2>&1``). A
        # stderr whose reader left must not cost the summary: logging never raises.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


def _display() -> tuple[bool, int | None]:
    """``(colour, width)`` for stdout: both only on a terminal; ``NO_COLOR`` turns colour off."""
    if not sys.stdout.isatty():
        return False, None
    import shutil

    color = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    return color, shutil.get_terminal_size().columns


def _registry(settings: Any) -> TaskRegistry:
    """The registry the daemon would build from ``settings``: a type they turn off is
    refused, and ``[task_limits]`` naming an unknown type is a ``ConfigError``."""
    from wfe_daemon.service.wiring import load_registry

    return load_registry(settings)


def _parse_file(path: Path, settings: Any, args: argparse.Namespace | None = None) -> WorkflowDef:
    from wfe_daemon.core.model import parse_workflow

    registry = _registry(settings)  # the configuration is checked before the file is read
    data = _read(path, settings.max_file_size)
    if args is not None:
        data = _with_arguments(args, data, settings.max_file_size)
    return parse_workflow(data, registry)


def _with_arguments(args: argparse.Namespace, data: bytes, max_size: int) -> bytes:
    """The workflow ``data`` with the ``-p`` and ``--params-file`` values of ``args``."""
    from wfe_daemon.cli.runargs import given_arguments, with_arguments

    return with_arguments(data, given_arguments(args.param, args.params_file, max_size))


# -- commands --------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from wfe_daemon.logs import configure_logging
    from wfe_daemon.service.daemon import serve

    settings = _settings(args)
    configure_logging(settings.log_level)
    front = None
    if settings.http_port or settings.metrics_port:
        from wfe_daemon.web.front import front_for

        front = front_for(settings, os.environ)
    os.environ.pop("WFE_API_TOKEN", None)  # read once: no task's child process inherits it
    from wfe_daemon.runtime.eventloop import run_to_exit

    return run_to_exit(serve(settings, front), _status_of)


def _execute(args: argparse.Namespace) -> int:
    settings = _settings(args)
    registry = _registry(settings)
    notify_url = _notify_url(settings) if args.notify else None
    try:
        data: bytes | None = _read(args.file, settings.max_file_size)
        problem = None
    except WorkflowRejected as exc:  # too big to read: still a REJECTED run with a summary
        data, problem = None, "; ".join(exc.problems)
    if data is not None:
        data = _with_arguments(args, data, settings.max_file_size)
    live = _live_line(settings, data)
    path = args.file.resolve()

    async def action(registry: TaskRegistry, store: Store, engine: Engine) -> RunSummary:
        from wfe_daemon.service.cancel import run_cancellable
        from wfe_daemon.service.submission import submit

        work = submit(
            data,
            registry=registry,
            store=store,
            engine=engine,
            source=path.name,
            source_path=path,
            problem=problem,
        )
        return await run_cancellable(store, engine, work)  # `wfe-daemon cancel` reaches it too

    summary = _async(_with_engine, settings, registry, live, action)
    code = _print_summary(summary)
    if notify_url is not None:
        sys.stdout.flush()  # the summary first: the webhook may take its retries
        _async(_notify, settings, notify_url, summary)
    return code


def _notify_url(settings: Any) -> str:
    """The ``[notify]`` webhook for ``execute --notify``; a usage error when there is none."""
    from wfe_daemon.service.notify import webhook_url

    url = webhook_url(settings.notify, os.environ)
    if url is None:
        raise UsageError("--notify: no webhook configured: set [notify] url or url_file")
    return url


async def _notify(settings: Any, url: str, summary: RunSummary) -> None:
    """Tell the webhook of ``summary`` when its status is one of ``[notify] on``."""
    from wfe_daemon.service.notify import Webhook

    if summary["status"] in settings.notify.on:
        await Webhook(settings.notify, url).deliver(summary)


def _live_line(settings: Any, data: bytes | None) -> LiveLine | None:
    """Configure logs to stderr, through a live progress line when stderr is a terminal."""
    from wfe_daemon.logs import configure_logging

    live = None
    if sys.stderr.isatty():
        from wfe_daemon.cli.progress import LiveLine, Progress

        live = LiveLine(sys.stderr, Progress(_node_count(data)))
    configure_logging(settings.log_level, sys.stderr if live is None else cast(TextIO, live))
    return live


def _node_count(data: bytes | None) -> int | None:
    from wfe_daemon.core.strictjson import load_json

    try:
        doc = load_json(data) if data is not None else None
    except WorkflowRejected:
        return None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    return len(nodes) if isinstance(nodes, list) else None


def _print_summary(summary: RunSummary) -> int:
    from wfe_daemon.core.masking import MASKER

    _print_json(MASKER.value(summary))  # a secret this process read never reaches stdout
    return {"SUCCESS": 0, "REJECTED": 2}.get(summary["status"], 1)


async def _with_engine(
    settings: Any,
    registry: TaskRegistry,
    live: LiveLine | None,
    action: Callable[[TaskRegistry, Store, Engine], Awaitable[RunSummary]],
) -> RunSummary:
    """Run ``action`` on the store and the engine over it (``wiring.open_engine``); its
    summary.

    SIGTERM or SIGINT cancels the engine's runs (see :func:`_cancel_on_signal`).
    """
    from contextlib import AsyncExitStack

    from wfe_daemon.service.wiring import open_cluster, open_engine, startup_objects_frozen
    from wfe_daemon.store.database import Store

    executor = None if live is None else live.progress.executor
    async with (
        Store.open(settings.db_path) as store,
        open_cluster(settings, daemon=False) as cluster,
        open_engine(
            settings, registry, store, executor=executor, cluster=cluster, lazy_http=True
        ) as engine,
    ):
        async with AsyncExitStack() as stack:
            if live is not None:
                await stack.enter_async_context(live)
            stack.enter_context(startup_objects_frozen())
            summary = await _cancel_on_signal(engine, action(registry, store, engine))
        store.mark_settled(summary["run_id"])  # published on stdout; nothing left to recover
        return summary


async def _cancel_on_signal(engine: Engine, work: Awaitable[RunSummary]) -> RunSummary:
    """Await ``work``; the first SIGTERM or SIGINT cancels the engine's runs, a second exits.

    A cancelled run ends CANCELLED, with its summary, and frees its idempotency key; a
    run that registers after the signal is cancelled as soon as it does. The second signal
    exits at once with 128 + its number, leaving the run RUNNING for the daemon to resume.
    """
    import signal

    import anyio

    from wfe_daemon.service.shutdown import watch_stop_signals
    from wfe_daemon.taskgroup import one_error

    stop = anyio.Event()

    def at_once(signum: signal.Signals) -> None:
        ids = ", ".join(map(str, engine.active_runs)) or "none"
        print(f"wfe-daemon: stopped at once; left RUNNING: {ids}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    async def cancel_runs() -> None:
        await stop.wait()
        while True:
            for run_id in list(engine.active_runs):
                engine.cancel(run_id)
            await anyio.sleep(0.05)

    with one_error():
        async with anyio.create_task_group() as tg:
            await tg.start(watch_stop_signals, lambda _: stop.set(), at_once)
            tg.start_soon(cancel_runs)
            summary = await work
            tg.cancel_scope.cancel()
    return summary


def _validate(args: argparse.Namespace) -> int:
    from wfe_daemon.cli.runargs import given_arguments
    from wfe_daemon.cli.scheduling import validate_schedule

    settings = _settings(args)
    given = given_arguments(args.param, args.params_file, settings.max_file_size)
    if not validate_schedule(args.file, settings, _registry(settings), given):
        _parse_file(args.file, settings, args)  # not a schedule file: a workflow
    return 0


def _tasks(args: argparse.Namespace) -> int:
    # The daemon's registry: a bad configuration (``[task_limits]`` too) stops this one too.
    described = _registry(_settings(args)).describe()
    if args.json:
        _print_json(described)
        return 0
    from wfe_daemon.cli.views import task_types

    print(task_types(described))
    return 0


_SUMMARY_NAMES = {"id": "run_id", "name": "workflow"}
"""``runs --json`` names a run's fields as its result summary does."""


def _runs(args: argparse.Namespace) -> int:
    runs = _async(
        _with_store,
        _settings(args),
        lambda store: store.list_runs(args.limit, statuses=args.status, since=args.since),
    )
    if args.json:
        _print_json(
            [{_SUMMARY_NAMES.get(key, key): value for key, value in run.items()} for run in runs]
        )
        return 0
    from wfe_daemon.cli.views import runs_table

    color, width = _display()
    print(runs_table(runs, color=color, width=width))
    return 0


def _show(args: argparse.Namespace) -> int:
    run = _get_run(_settings(args), args.run_id)
    if args.json:
        _print_json(run)
        return 0
    from wfe_daemon.cli.views import run_detail

    color, width = _display()
    print(run_detail(run, color=color, width=width))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from wfe_daemon.core import graph

    settings = _settings(args)
    statuses: dict[str, str] | None = None
    if args.target.isdigit() and not Path(args.target).exists():
        run = _get_run(settings, int(args.target))
        name, nodes = run["name"], graph.graph_nodes(run["definition"])
        if not nodes:
            raise StoreError(f"run {run['id']} ({run['status']}) has no stored workflow to draw")
        statuses = {node["node_id"]: node["status"] for node in run["nodes"]}
    else:
        workflow = _parse_file(Path(args.target), settings, args)
        name = workflow.name
        nodes = [graph.GraphNode(n.id, n.type, n.depends_on) for n in workflow.nodes]
    if args.format == "dot":
        print(graph.dot(name, nodes, statuses))
    else:
        print(graph.mermaid(nodes, statuses))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from wfe_daemon.service.cancel import request_cancel

    print(
        _async(
            _with_store_writing, _settings(args), lambda store: request_cancel(store, args.run_id)
        )
    )
    return 0


def _submit(args: argparse.Namespace) -> int:
    from wfe_daemon.cli.submitting import ApiRefused, print_refusal, submit_file, wait_for_run

    settings = _settings(args)
    data = _read(args.file, settings.max_file_size)
    data = _with_arguments(args, data, settings.max_file_size)
    stem = args.name if args.name is not None else args.file.stem
    try:
        submitted = submit_file(
            settings, os.environ, data, stem=stem, idempotency_key=args.idempotency_key
        )
    except ApiRefused as exc:
        return print_refusal(exc)
    if args.json:
        _print_json(submitted.answer)
    else:
        print(submitted.run_id)
    if not args.wait:
        return 0
    sys.stdout.flush()  # the run id first, while the run goes on
    return _print_summary(cast("RunSummary", wait_for_run(settings, submitted.run_id)))


def _schedules(args: argparse.Namespace) -> int:
    from wfe_daemon.cli.scheduling import list_schedules, schedules_table

    settings = _settings(args)
    rows = _async(list_schedules, settings, _registry(settings))
    if args.json:
        _print_json(rows)
    elif rows:
        print(schedules_table(rows))
    else:
        print(f"wfe-daemon: no schedule files in {settings.schedules}", file=sys.stderr)
    return 0


def _trigger(args: argparse.Namespace) -> int:
    from wfe_daemon.cli.scheduling import now_for, trigger_document
    from wfe_daemon.cli.submitting import ApiRefused, print_refusal, submit_file
    from wfe_daemon.core.model import parse_workflow

    settings = _settings(args)
    registry = _registry(settings)
    data, stem = trigger_document(settings, registry, args.name, now_for())
    data = _with_arguments(args, data, settings.max_file_size)
    parse_workflow(data, registry)  # bad -p values: exit 2 here, as the API would answer
    try:
        print(submit_file(settings, os.environ, data, stem=stem, idempotency_key=None).run_id)
    except ApiRefused as exc:
        return print_refusal(exc)
    return 0


def _retry(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.detach:
        from wfe_daemon.cli.submitting import ApiRefused, print_refusal, retry_detached

        try:
            print(retry_detached(settings, os.environ, args.run_id).run_id)
        except ApiRefused as exc:
            return print_refusal(exc)
        return 0
    registry = _registry(settings)
    live = _live_line(settings, None)

    async def action(registry: TaskRegistry, store: Store, engine: Engine) -> RunSummary:
        from wfe_daemon.service.retry import retry_run

        return await retry_run(
            args.run_id, settings=settings, registry=registry, store=store, engine=engine
        )

    return _print_summary(_async(_with_engine, settings, registry, live, action))


def _get_run(settings: Any, run_id: int) -> RunRecord:
    run: RunRecord | None = _async(_with_store, settings, lambda store: store.get_run(run_id))
    if run is None:
        raise StoreError(f"no run {run_id}")
    return run


async def _with_store(settings: Any, query: Callable[[Store], Awaitable[Any]]) -> Any:
    """``query(store)`` on the database opened read-only: a daemon's lock never holds it up."""
    import anyio

    from wfe_daemon.store.database import Store

    missing = not await anyio.Path(settings.db_path).exists()
    async with Store.open_read_only(settings.db_path) as store:  # missing: reads as empty
        found = await query(store)
    if missing and found == []:  # an empty listing says where it looked
        print(
            f"wfe-daemon: no database at {settings.db_path} yet: nothing has run", file=sys.stderr
        )
    return found


async def _with_store_writing(settings: Any, query: Callable[[Store], Awaitable[Any]]) -> Any:
    """``query(store)`` on the database opened for writing (``cancel``)."""
    from wfe_daemon.store.database import Store

    async with Store.open(settings.db_path) as store:
        return await query(store)
