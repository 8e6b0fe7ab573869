"""The registry of task types: the built-ins it is given and the installed plugins.

What a task type is (the ``Task`` protocol) and what it gets (``TaskContext``) live in
:mod:`wfe_daemon.runtime.task`; the built-in types in :mod:`wfe_daemon.tasks`, which the caller
passes in (``TaskRegistry.load(BUILTINS)``), so this module never imports them.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from wfe_daemon.core.model import hide_url_secrets, is_secret_key, redact_secrets
from wfe_daemon.core.refs import contains_ref
from wfe_daemon.errors import ConfigError
from wfe_daemon.runtime.secrets import SecretStore
from wfe_daemon.runtime.task import Task

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

ENTRY_POINT_GROUP = "wfe_daemon.tasks"


class TaskRegistry:
    """The task types known to this process, by ``type``; built once at start-up.

    It also checks params against each type's JSON Schema (``check_params``), which is
    what workflow validation calls through :class:`~wfe_daemon.core.model.TaskCatalog`.
    """

    def __init__(self, tasks: Iterable[Task], sources: Mapping[str, str] | None = None) -> None:
        """Register ``tasks`` as given: their ``params_schema`` is not checked against the
        metaschema (the built-ins' are, by the test suite); :meth:`load` checks plugins'."""
        self._tasks: dict[str, Task] = {}
        self._sources: dict[str, str] = {}
        self._validators: dict[str, Validator | None] = {}
        self._refusals: dict[str, str] = {}
        self.secrets = SecretStore(None)
        """The secrets ``{{ secrets.NAME }}`` names (``load_registry`` sets ``secrets_dir``)."""
        for task in tasks:
            self._add(task, (sources or {}).get(task.type, "built-in"))

    @classmethod
    def load(
        cls,
        builtins: Sequence[type[Task]],
        entry_point_group: str | None = ENTRY_POINT_GROUP,
    ) -> TaskRegistry:
        """Build the registry from ``builtins`` (``tasks.BUILTINS``) and the installed plugins.

        Plugins are classes (or callables returning a ``Task``) published under the
        entry-point group ``wfe_daemon.tasks``. They are looked up here only: a plugin
        installed later is seen by the next process (the daemon after a restart).

        Raises:
            ConfigError: two types share a name, a plugin fails to load, or a
                plugin's ``params_schema`` is not a valid JSON Schema (the built-ins'
                are checked by the test suite, not at every start).
        """
        registry = cls(task_class() for task_class in builtins)
        if entry_point_group:
            for ep in importlib.metadata.entry_points(group=entry_point_group):
                source = _plugin_source(ep)
                try:
                    task = ep.load()()
                except Exception as exc:
                    raise ConfigError(f"task {source}: cannot load: {exc}") from exc
                registry._add(task, source, check_schema=True)
        return registry

    def _add(self, task: Task, source: str, *, check_schema: bool = False) -> None:
        if not isinstance(task, Task):
            raise ConfigError(f"{source}: {task!r} does not satisfy the Task protocol")
        if task.type in self._tasks:
            first = self._sources[task.type]
            raise ConfigError(f"task type {task.type!r} is defined twice: {first} and {source}")
        if check_schema:
            _check_schema(task, source)
        self._tasks[task.type] = task
        self._sources[task.type] = source

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(sorted(self._tasks.values(), key=lambda t: t.type))

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, task_type: str) -> Task:
        return self._tasks[task_type]

    def refuse(self, task_type: str, reason: str) -> None:
        """Keep ``task_type`` listed but reject every workflow that uses it, saying ``reason``.

        For a type the settings turn off (``shell`` without ``enable_shell``): validation
        then reports it up front instead of the node failing once the run has started.
        """
        if task_type in self._tasks:
            self._refusals[task_type] = reason

    def refusal(self, task_type: str) -> str | None:
        """Why a workflow may not use ``task_type`` here (see :meth:`refuse`), or ``None``."""
        return self._refusals.get(task_type)

    def check_params(
        self, task_type: str, params: Mapping[str, Any], *, resolved: bool = False
    ) -> list[str]:
        """Messages for every way ``params`` fails the schema of ``task_type``.

        Unless ``resolved``, a value holding a ``{{ reference }}`` is left to be judged
        once resolved, at node start. A schema may word its ``pattern`` failures with an
        ``errorMessage`` beside the pattern (the ajv-errors keyword).
        """
        validator = self._validator(task_type)
        errors = () if validator is None else validator.iter_errors(params)
        problems = []
        for error in errors:
            if not resolved and isinstance(error.instance, str) and contains_ref(error.instance):
                continue
            where = ".".join(str(part) for part in error.absolute_path)
            message = _message(error)
            problems.append(f"{where}: {message}" if where else message)
        check_extra = getattr(self._tasks[task_type], "validate_params", None)
        if check_extra is not None and not problems:
            problems.extend(check_extra(params, resolved=resolved))
        return problems

    def _validator(self, task_type: str) -> Validator | None:
        """The validator of the type's schema, built on first use; None for a schema that
        any object meets (``echo``'s), so checking its params costs nothing."""
        if task_type not in self._validators:
            schema = self._tasks[task_type].params_schema
            self._validators[task_type] = None if schema == _ANY_OBJECT else _validator(schema)
        return self._validators[task_type]

    def check_arguments(
        self, schema: Mapping[str, Any], arguments: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """Check a workflow's ``params`` schema and its ``arguments`` against it.

        The schema is one already within the supported subset
        (:func:`~wfe_daemon.core.paramschema.schema_problems`), checked here as a Draft
        2020-12 schema of ``"type": "object"``; missing values take its properties'
        defaults; values are checked with formats (``date``, ``date-time``, ``email``...).
        Whatever the check raises is a ``params: ...`` problem, never an exception.

        Returns:
            The arguments with defaults filled, and every problem: ``params: ...`` for
            the schema, ``arguments.NAME: ...`` for the values.
        """
        try:
            return _checked_arguments(schema, arguments)
        except RecursionError:
            return dict(arguments), ["params: nested too deeply to check"]
        except Exception as exc:  # a schema must never take a submission down
            return dict(arguments), [f"params: cannot be checked: {type(exc).__name__}: {exc}"]
        finally:
            _ENUM_KEYS.clear()

    def secret_problem(self, name: str) -> str | None:
        """Why ``{{ secrets.<name> }}`` cannot be used here (see :attr:`secrets`), or None."""
        return self.secrets.problem(name)

    def describe(self) -> list[dict[str, Any]]:
        """Every type's metadata, sorted by type (what ``wfe-daemon tasks`` prints)."""
        return [
            {
                "type": task.type,
                "display_name": task.display_name,
                "description": task.description,
                "category": task.category,
                "default_timeout": task.default_timeout,
                "params_schema": task.params_schema,
            }
            for task in self
        ]


_ANY_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}
"""A params schema that every object meets: params are always an object."""


def _validator(schema: Mapping[str, Any]) -> Validator:
    from jsonschema.validators import validator_for

    return validator_for(schema)(schema)


def _check_schema(task: Task, source: str) -> None:
    """A ``ConfigError`` when the task's ``params_schema`` is not a valid JSON Schema."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(task.params_schema).check_schema(dict(task.params_schema))
    except SchemaError as exc:
        raise ConfigError(f"{source}: params_schema of {task.type!r}: {exc.message}") from exc


def _checked_arguments(
    schema: Mapping[str, Any], arguments: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    from jsonschema.validators import Draft202012Validator

    Validator = _params_validator()
    checker = Validator.FORMAT_CHECKER
    meta = Draft202012Validator(Validator.META_SCHEMA, format_checker=checker)
    problems = [
        f"params{_at(error.absolute_path)}: {error.message}" for error in meta.iter_errors(schema)
    ]
    if schema.get("type") != "object":
        problems.append('params: must be a schema of "type": "object" (named values)')
    if problems:
        return dict(arguments), problems
    values = dict(arguments)
    properties = schema.get("properties")
    for name, prop in (properties if isinstance(properties, Mapping) else {}).items():
        if name not in values and isinstance(prop, Mapping) and "default" in prop:
            values[name] = copy.deepcopy(prop["default"])
    validator = Validator(schema, format_checker=checker)
    found = []
    for error in validator.iter_errors(values):
        if error.validator == "required" and not error.absolute_path:
            missing = error.message.partition(" is a required")[0].strip("'")
            found.append(f"arguments.{missing}: required, and params gives no default")
        else:
            found.append(f"arguments{_at(error.absolute_path)}: {_message(error)}")
    return values, sorted(found)


@functools.cache
def _params_validator() -> Any:
    """Draft 2020-12 with ``uniqueItems``, ``enum`` and ``const`` checked in linear time
    (jsonschema compares every pair of objects, and each value with every listed one:
    minutes for a few thousand)."""
    from jsonschema.validators import Draft202012Validator, extend

    return extend(  # type: ignore[no-untyped-call]  # (jsonschema leaves it untyped)
        Draft202012Validator, {"uniqueItems": _unique_items, "enum": _enum, "const": _const}
    )


_ENUM_KEYS: dict[int, tuple[Any, frozenset[Any]]] = {}
"""Each ``enum`` list's canonical keys, by the list's identity (the list is kept, so its
identity is not reused), built once per list while a check runs (then cleared)."""


def _enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    cached = _ENUM_KEYS.get(id(enums))
    if cached is None or cached[0] is not enums:
        cached = (enums, frozenset(_canonical(value) for value in enums))
        _ENUM_KEYS[id(enums)] = cached
    if _canonical(instance) not in cached[1]:
        yield ValidationError(f"{_shown(instance)} is not one of {_shown(enums)}")


def _const(validator: Any, const: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if _canonical(instance) != _canonical(const):
        yield ValidationError(f"{_shown(const)} was expected")


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters."""
    shown = repr(value)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if unique is True and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"{_shown(instance)} has non-unique elements")
                return
            seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable key equal for values JSON Schema calls equal (``1`` and ``1.0``, objects
    whatever their key order) and different otherwise (``true`` and ``1``)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, float) and value.is_integer():
        return ("n", int(value))
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, list | tuple):
        return ("l", tuple(_canonical(item) for item in value))
    if isinstance(value, Mapping):
        return ("o", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("s", value)


def _at(path: Iterable[Any]) -> str:
    """``.a.0.b`` for the path ``a, 0, b`` of a value in a document ("" at the top)."""
    return "".join(f".{part}" for part in path)


def _plugin_source(ep: importlib.metadata.EntryPoint) -> str:
    """``plugin module:Class (distribution name version)``: two distributions may publish
    the same entry point, and only the distribution tells them apart."""
    dist = ep.dist
    if dist is None:
        return f"plugin {ep.value}"
    return f"plugin {ep.value} (distribution {dist.name} {dist.version})"


def _message(error: Any) -> str:
    """The schema's own wording of a failed ``pattern``, else jsonschema's message.

    A value under a secret-named key (``headers.Authorization``, ``api_key``...), or one
    holding such a key, is never quoted: the message names the rule it broke instead. A
    quoted URL shows its user info and secret-named parameters as ``***``.
    """
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    wording = schema.get("errorMessage")
    if _holds_secret(error):
        if error.validator == "type":
            broken = f"is not of type {error.validator_value!r}"
        elif isinstance(wording, str):
            broken = wording
        else:
            broken = f"fails the schema's {error.validator!r} rule"
        return f"{broken} (a secret: its value is not shown)"
    if error.validator == "pattern" and isinstance(wording, str):
        return hide_url_secrets(f"{wording}, got {error.instance!r}")
    return hide_url_secrets(str(error.message))


_NAMES_ONLY: Final = frozenset({"required", "additionalProperties", "dependentRequired"})
"""Rules whose messages quote property names, never values."""


def _holds_secret(error: Any) -> bool:
    if error.validator in _NAMES_ONLY:
        return False
    if any(isinstance(part, str) and is_secret_key(part) for part in error.absolute_path):
        return True
    return redact_secrets(error.instance) is not error.instance
