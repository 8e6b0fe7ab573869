"""What a run is given besides its nodes: ``params`` (a JSON Schema), ``arguments`` (the
values), ``scheduled_for``, and the references to them. Pure.

The values travel in the workflow document itself, as a top-level ``arguments`` object, so
every way in (a file in the inbox, the API, ``execute`` and ``submit`` with ``-p``, a
schedule) takes the one path through validation. The reserved reference roots
(:data:`~wfe_daemon.core.refs.RESERVED`) resolve like node outputs: :func:`reserved_values`
gives the engine their values as extra "outputs" when a node starts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from wfe_daemon.core.paramschema import arguments_problem, schema_problems
from wfe_daemon.core.refs import Ref
from wfe_daemon.core.strictjson import show

__all__ = [
    "INPUT_KEYS",
    "InputCatalog",
    "RunInputs",
    "check_inputs",
    "check_reserved_refs",
    "reserved_id_problem",
    "reserved_values",
    "shown_values",
]

INPUT_KEYS: Final = frozenset({"params", "arguments", "scheduled_for"})
"""The top-level keys of a workflow this module reads."""

_WHY_RESERVED: Final[Mapping[str, str]] = {
    "params": "{{ params.X }} refers to the run's parameters",
    "run": "{{ run.id }} and {{ run.scheduled_for }} refer to the run itself",
    "secrets": "{{ secrets.NAME }} refers to a secret in secrets_dir",
}
_RUN_FIELDS: Final = ("id", "scheduled_for")
SECRET_NAME: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
"""A secret's name, which is its file's name in ``secrets_dir``: no separators, no dotfiles."""


@dataclass(frozen=True, slots=True)
class RunInputs:
    """A workflow's ``params`` schema, its ``arguments`` (defaults filled), ``scheduled_for``."""

    params: Mapping[str, Any] | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    scheduled_for: str | None = None


class InputCatalog(Protocol):
    """What validating a run's inputs needs from outside the core (the registry gives it)."""

    def check_arguments(
        self, schema: Mapping[str, Any], arguments: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """The arguments with the schema's defaults filled, and every problem of the
        schema (``params: ...``) or of the values (``arguments.NAME: ...``)."""
        ...

    def secret_problem(self, name: str) -> str | None:
        """Why ``{{ secrets.<name> }}`` cannot be resolved here, or None when it exists."""
        ...


def reserved_id_problem(node_id: str) -> str | None:
    """The problem of a node id that is a reserved reference root, or None."""
    why = _WHY_RESERVED.get(node_id)
    return None if why is None else f"node id '{node_id}' is reserved: {why}"


def check_inputs(doc: Mapping[str, Any], catalog: InputCatalog, problems: list[str]) -> RunInputs:
    """Check ``params``, ``arguments`` and ``scheduled_for`` of ``doc``; add every problem."""
    schema = doc.get("params")
    if "params" in doc and not isinstance(schema, Mapping):
        problems.append(f"params: must be a JSON Schema object, got {show(schema)}")
        schema = None
    given = doc.get("arguments", {})
    if not isinstance(given, Mapping):
        problems.append(f"arguments: must be an object of parameter values, got {show(given)}")
        given = {}
    if schema is None:
        if given:
            names = ", ".join(repr(name) for name in given)
            problems.append(f"arguments: unknown {names}: the workflow declares no params")
        arguments: Mapping[str, Any] = {}
    elif found := schema_problems(schema):  # outside the subset: not worth checking values
        problems.extend(found)
        arguments = dict(given)
    elif too_large := arguments_problem(given):
        problems.append(too_large)
        arguments = dict(given)
    else:
        arguments, found = catalog.check_arguments(schema, given)
        problems.extend(found)
    return RunInputs(schema, arguments, _scheduled_for(doc, problems))


def _scheduled_for(doc: Mapping[str, Any], problems: list[str]) -> str | None:
    if "scheduled_for" not in doc:
        return None
    value = doc["scheduled_for"]
    moment = None
    if isinstance(value, str) and len(value) > 10 and value[10] in "Tt ":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        problems.append(
            "scheduled_for: must be an ISO 8601 date-time with an offset"
            f" (like 2026-12-04T06:00:00+01:00), got {show(value)}"
        )
        return None
    return str(value)


def check_reserved_refs(
    found: Iterable[tuple[str, Ref]], inputs: RunInputs, catalog: InputCatalog
) -> list[str]:
    """A problem for each reference among ``found`` (node id, reference) to ``params``,
    ``run`` or ``secrets`` that cannot be resolved; each secret is looked up once."""
    problems: list[str] = []
    secrets: dict[str, str | None] = {}
    for node_id, ref in found:
        if ref.node_id == "params":
            problem = _params_problem(ref, inputs)
        elif ref.node_id == "run":
            problem = _run_problem(ref, inputs)
        else:
            problem = _secret_problem(ref, catalog, secrets)
        if problem is not None:
            problems.append(f"node '{node_id}': reference {ref.text} {problem}")
    return problems


def _params_problem(ref: Ref, inputs: RunInputs) -> str | None:
    if inputs.params is None:
        return "names a parameter, but the workflow declares no params"
    if not ref.path:
        return "must name a parameter: {{ params.NAME }}"
    name = ref.path[0]
    properties = inputs.params.get("properties")
    declared = list(properties) if isinstance(properties, Mapping) else []
    if name not in declared:
        close = difflib.get_close_matches(name, declared, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"names parameter '{name}', which params does not declare{hint}"
    required = inputs.params.get("required")
    if name not in inputs.arguments and not (isinstance(required, list) and name in required):
        return (  # (a missing required one is reported by the arguments' check)
            f"needs a value for parameter '{name}': give it in arguments"
            f" (-p {name}=...) or a default in params"
        )
    return None


def _run_problem(ref: Ref, inputs: RunInputs) -> str | None:
    if len(ref.path) != 1 or ref.path[0] not in _RUN_FIELDS:
        return "must be {{ run.id }} or {{ run.scheduled_for }}"
    if ref.path[0] == "scheduled_for" and inputs.scheduled_for is None:
        return (
            "needs the run's scheduled_for: a schedule sets it, or set a top-level"
            ' "scheduled_for" (an ISO 8601 date-time with an offset)'
        )
    return None


def _secret_problem(ref: Ref, catalog: InputCatalog, seen: dict[str, str | None]) -> str | None:
    if not ref.path:
        return "must name a secret: {{ secrets.NAME }}"
    name = ref.path[0]
    if not SECRET_NAME.fullmatch(name):
        return f"names {show(name)}, which is not a secret's name ([A-Za-z0-9_.-], no leading dot)"
    if name not in seen:
        seen[name] = catalog.secret_problem(name)
    return seen[name]


def reserved_values(
    refs: Iterable[Ref],
    *,
    arguments: Mapping[str, Any],
    run_id: int,
    scheduled_for: str | None,
    read_secret: Callable[[str], str],
) -> dict[str, Any]:
    """The values of the reserved roots among ``refs``, as extra node "outputs".

    Each secret referenced is read now, through ``read_secret`` (which may raise).
    """
    values: dict[str, Any] = {}
    for ref in refs:
        if ref.node_id == "params":
            values["params"] = arguments
        elif ref.node_id == "run":
            run: dict[str, Any] = {"id": run_id}
            if scheduled_for is not None:
                run["scheduled_for"] = scheduled_for
            values["run"] = run
        elif ref.node_id == "secrets" and ref.path:
            secrets = values.setdefault("secrets", {})
            if ref.path[0] not in secrets:
                secrets[ref.path[0]] = read_secret(ref.path[0])
    return values


class _Hidden(Mapping[str, str]):
    """Every secret, as a reader of a stored run sees it: ``***``."""

    def __contains__(self, name: object) -> bool:
        return True

    def __getitem__(self, name: str) -> str:
        return "***"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def shown_values(definition: Any, run_id: int) -> dict[str, Any]:
    """The reserved roots as a stored run shows them (the API's resolved params): the
    stored ``arguments`` over the ``params`` defaults, the run's id and ``scheduled_for``,
    and every secret as ``***``."""
    doc = definition if isinstance(definition, Mapping) else {}
    schema, given = doc.get("params"), doc.get("arguments")
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    arguments = {
        name: prop["default"]
        for name, prop in (properties if isinstance(properties, Mapping) else {}).items()
        if isinstance(prop, Mapping) and "default" in prop
    }
    arguments.update(given if isinstance(given, Mapping) else {})
    run: dict[str, Any] = {"id": run_id}
    if isinstance(doc.get("scheduled_for"), str):
        run["scheduled_for"] = doc["scheduled_for"]
    return {"params": arguments, "run": run, "secrets": _Hidden()}
