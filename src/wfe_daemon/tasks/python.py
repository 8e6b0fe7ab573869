"""``python``: call an importable function, opt-in through ``enable_python``.

``function`` is ``package.module:name`` (a dotted attribute path after the colon). The
module is imported when the node runs, in a thread (an import may be slow), never at
validation: for a node run on a cluster it may exist only on the workers. An ``async def``
(or a function returning an awaitable) is awaited on the event loop; a plain function
runs in a thread of its own. The return value is the output; an exception fails the node
with its type and message, its traceback going to the log at debug level.

A plain function cannot be killed: on a timeout or a cancel, :class:`~._stoppable.Stopped`
is raised in its thread at its next bytecode (:mod:`._stoppable`), so pure-Python code
stops at once; code blocked in C finishes that call first, and is left running (with a
warning) if that takes over a second.

The settings of the process the node runs in are checked at execute time (on a Dask
worker, the worker's own): ``enable_python``, and the module prefixes ``python_modules``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import re
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

from wfe_daemon.core.importpath import (
    FUNCTION_PATTERN,
    FUNCTION_WORDING,
    allowed,
    refusal,
    split_function,
)
from wfe_daemon.core.model import hide_url_secrets
from wfe_daemon.core.refs import contains_ref
from wfe_daemon.errors import TaskError, TaskFailed
from wfe_daemon.logs import PYTHON_LEFT_RUNNING, PYTHON_TRACEBACK
from wfe_daemon.runtime.task import Output, Params, TaskContext, being_cancelled
from wfe_daemon.tasks._stoppable import STOP_GRACE_S, call_stoppable

_OWN_FILES: Final = frozenset({__file__, call_stoppable.__code__.co_filename})
"""Frames of these files are cut from the top of a traceback: the user's code is what counts."""


class PythonTask:
    """Calls ``function`` with ``kwargs``; refused unless ``enable_python``."""

    type: ClassVar[str] = "python"
    display_name: ClassVar[str] = "Python function"
    description: ClassVar[str] = (
        "Calls an importable Python function, `package.module:name`, with `kwargs`; its "
        "return value (JSON) is the output, an exception fails the node with its type and "
        "message. The module is imported when the node runs, once per process. An "
        "`async def` is awaited on the event loop; a plain function runs in a thread of "
        "its own. Refused unless the `enable_python` setting is true; `python_modules` "
        "limits the modules. On a timeout or cancellation an async function is cancelled; "
        "a plain one gets an exception raised in its thread at its next Python bytecode, "
        f"so a pure-Python loop stops at once, while a call blocked in C code (a sleep, a "
        f"read) finishes first and is left running, logged, if that takes over "
        f"{STOP_GRACE_S:g} s."
    )
    category: ClassVar[str] = "code"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "function": {
                "type": "string",
                "pattern": FUNCTION_PATTERN,
                "errorMessage": FUNCTION_WORDING,
                "description": "The function, as `package.module:name` "
                "(`pkg.mod:Class.method` reaches an attribute of an attribute).",
            },
            "kwargs": {
                "type": "object",
                "default": {},
                "description": "Keyword arguments of the call, by name.",
            },
        },
        "required": ["function"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None
    output_doc: ClassVar[Mapping[str, str]] = {}
    failure_doc: ClassVar[Sequence[str]] = (
        "`enable_python` is false (the default).",
        "The module is outside `python_modules`, or the attribute path reaches a module, "
        "or a name or object whose code comes from a module, outside it.",
        "The module cannot be imported (not found, or its code raises), or has no such "
        "attribute, or the attribute is not callable.",
        "The function raises (even `SystemExit` or a `CancelledError` of its own): the "
        "error is `Type: message` (the traceback is logged at debug level).",
        "The return value is not JSON (the error names where), or holds itself, or nests "
        "deeper than 250 levels.",
        "The node's timeout expires.",
    )

    def __init__(self) -> None:
        self.modules: tuple[str, ...] | None = None
        """The allowlist a literal ``function`` is checked against at validation (the
        daemon sets it from ``python_modules``); ``None``: checked when the node runs."""

    def validate_params(self, params: Params, *, resolved: bool) -> list[str]:
        """A literal ``function`` outside ``python_modules`` is refused up front, and one
        the schema's pattern lets by with a final line break."""
        function = params.get("function")
        if not isinstance(function, str) or contains_ref(function):
            return []
        if not re.fullmatch(FUNCTION_PATTERN, function):  # the schema's $ allows a final \n
            return [f"function: {FUNCTION_WORDING}, got {function!r}"]
        if self.modules is None:
            return []
        problem = refusal(split_function(function)[0], self.modules)
        return [f"function: {problem}"] if problem else []

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        settings = ctx.settings
        if not settings.enable_python:
            raise TaskFailed(
                "the python task is disabled; set enable_python = true in the configuration "
                "(or WFE_ENABLE_PYTHON=1) to allow it"
            )
        spec: str = params["function"]
        problem = refusal(split_function(spec)[0], settings.python_modules)
        if problem is not None:
            raise TaskFailed(f"{spec}: {problem}")
        left_running = functools.partial(_warn_left_running, ctx, spec)
        name = f"wfe-python-{ctx.node_id}"
        try:
            function = await call_stoppable(
                functools.partial(_load, spec, settings.python_modules),
                name=name,
                left_running=left_running,
            )
            return await _call(function, dict(params.get("kwargs", {})), name, left_running)
        except BaseException as exc:  # GeneratorExit and the like fail the node, not the daemon
            if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                raise  # a timeout, a cancel, shutdown; else the function's own: a failure
            _log_traceback(ctx, spec, exc)
            raise TaskFailed(_describe(exc)) from exc


async def _call(
    function: Callable[..., Any],
    kwargs: dict[str, Any],
    name: str,
    left_running: Callable[[], None],
) -> Any:
    """Await an ``async def``; run anything else in its own thread, then await what it
    returned if that is awaitable. The engine checks the value (JSON, its nesting)."""
    if inspect.iscoroutinefunction(function):
        return await function(**kwargs)
    work = functools.partial(function, **kwargs)
    result = await call_stoppable(work, name=name, left_running=left_running)
    return await result if inspect.isawaitable(result) else result


def _describe(exc: BaseException) -> str:
    """``Type: message`` (a ``TaskError``: its message alone), whatever ``str()`` does."""
    try:
        text = str(exc)
    except BaseException as error:  # a broken __str__ must not hide the failure
        text = f"<its message could not be read: {type(error).__name__}>"
    return text if isinstance(exc, TaskError) else f"{type(exc).__name__}: {text}"


def _load(spec: str, prefixes: Sequence[str]) -> Callable[..., Any]:
    """Import the module of ``spec`` and walk its attribute path (in a worker thread)."""
    module_name, attributes = split_function(spec)
    target: Any = _import(spec, module_name)
    for at, attribute in enumerate(attributes):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            owner = ".".join([module_name, *attributes[:at]]) if at else module_name
            raise TaskFailed(f"{spec}: {owner} has no attribute {attribute!r}") from None
        problem = _foreign(target, ".".join(attributes[: at + 1]), prefixes)
        if problem is not None:
            raise TaskFailed(f"{spec}: {problem}")
    if not callable(target):
        raise TaskFailed(f"{spec}: not callable (it is a {type(target).__name__})")
    return target  # type: ignore[no-any-return]  # callable() narrows to a bare Callable


def _foreign(target: object, path: str, prefixes: Sequence[str]) -> str | None:
    """Why ``target``, reached by the attribute ``path``, is outside ``prefixes``: a module,
    or an object whose code lives in a module (``__module__``), not under them (a name
    imported from elsewhere, a method of an instance of another module's class)."""
    if not prefixes:
        return None
    if isinstance(target, types.ModuleType):
        return refusal(target.__name__, prefixes)
    module = getattr(target, "__module__", None)
    if isinstance(module, str) and allowed(module, prefixes):
        return None
    where = f"module {module!r}" if isinstance(module, str) else "no module"
    return f"{path} comes from {where}, outside python_modules ({', '.join(prefixes)})"


def _import(spec: str, module_name: str) -> types.ModuleType:
    for last_try in (False, True):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if last_try or not _names_path_of(exc, module_name):
                raise TaskFailed(f"{spec}: cannot import {module_name!r}: {exc}") from exc
        except Exception as exc:
            raise TaskFailed(f"{spec}: importing {module_name!r} failed: {_describe(exc)}") from exc
        # Finders cache what folders held: a module written since then is found now.
        importlib.invalidate_caches()
    raise AssertionError("unreachable")


def _names_path_of(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether the missing module is ``module_name`` or one of its parent packages."""
    return exc.name is not None and (module_name + ".").startswith(exc.name + ".")


def _log_traceback(ctx: TaskContext, spec: str, exc: BaseException) -> None:
    shown = _traceback(exc)
    if shown is not None:  # URL credentials hidden, as in the node's error
        ctx.log.debug(PYTHON_TRACEBACK, function=spec, traceback=hide_url_secrets(shown))


def _warn_left_running(ctx: TaskContext, spec: str) -> None:
    ctx.log.warning(
        PYTHON_LEFT_RUNNING,
        function=spec,
        error=f"its thread did not stop within {STOP_GRACE_S:g}s of the cancel (blocked "
        "outside Python code); it stops at its next Python bytecode",
    )


def _traceback(exc: BaseException) -> str | None:
    """``exc``'s traceback (and its causes'), without this task's own frames on top;
    ``None`` when nothing is left but the message (an error of this task's own)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    if tb is None and exc.__cause__ is None:
        return None
    return "".join(traceback.format_exception(type(exc), exc, tb))


TASKS = (PythonTask,)
