"""The workflow model: typed definitions, statuses, strict loading and validation. Pure."""

from __future__ import annotations

import codecs
import difflib
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from itertools import accumulate
from typing import Any, Protocol

from wfe_daemon.dag import find_cycle, non_ancestors
from wfe_daemon.errors import WorkflowRejected
from wfe_daemon.refs import find_refs

JSON = Any
"""Any value that came out of (or goes into) ``json``."""


class RunStatus(StrEnum):
    """Status of a workflow run; values are the contract's strings."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self is not RunStatus.RUNNING


class NodeStatus(StrEnum):
    """Status of one node of a run."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self not in (NodeStatus.PENDING, NodeStatus.RUNNING)


class TriggerRule(StrEnum):
    """When a node may start once its dependencies have ended."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ALL_FAILED = "all_failed"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"


@dataclass(frozen=True, slots=True)
class NodeDef:
    """One node of a workflow, as written in its file (params unresolved)."""

    id: str
    type: str
    params: Mapping[str, JSON] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None
    """Seconds; ``None`` falls through to the task type's default, then ``task_timeout``."""
    retries: int = 0
    retry_delay: float = 1.0
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A validated workflow: nodes in file order, every reference checked."""

    name: str
    nodes: tuple[NodeDef, ...]
    timeout: float | None = None
    """Seconds for the whole run; ``None`` means ``max_workflow_duration``."""
    idempotency_key: str | None = None

    def node(self, node_id: str) -> NodeDef:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


class TaskCatalog(Protocol):
    """What validation needs to know of the task types (the registry provides it)."""

    def __contains__(self, task_type: object) -> bool: ...

    def check_params(self, task_type: str, params: Mapping[str, JSON]) -> list[str]:
        """Return one message per way ``params`` fails the type's schema (empty when valid).

        Values that contain a ``{{ reference }}`` are not judged here: they are checked
        once resolved, when the node starts.
        """
        ...


MAX_DEPTH = 100
"""Deepest nesting of arrays and objects a workflow file may use."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOP_KEYS = frozenset({"name", "nodes", "timeout", "idempotency_key", "description"})
_NODE_KEYS = frozenset(
    {"id", "type", "depends_on", "params", "timeout", "retries", "retry_delay", "trigger_rule"}
)
_SECRET_WORDS = ("password", "token", "secret", "authorization", "api_key", "apikey")
_RULE_VALUES = frozenset(rule.value for rule in TriggerRule)
_RULES = ", ".join(rule.value for rule in TriggerRule)

# The depth pre-scan works on bytes: in UTF-8 the bytes of '"', '\\' and brackets never
# occur inside a multi-byte character. An unterminated string runs to the end of the
# text ('"?'), so the scan stays linear whatever the input.
_STRING_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENS = bytes.maketrans(b"[{]}", b"\x01\x01\x00\x00")
_CLOSES = bytes.maketrans(b"[{]}", b"\x00\x00\x01\x01")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def load_json(data: bytes) -> Any:
    """Parse a workflow file's bytes as strict JSON.

    A UTF-8 byte-order mark is tolerated. Numbers that are not finite, duplicate keys, lone
    surrogates and nesting deeper than :data:`MAX_DEPTH` are refused. The depth is checked
    by a linear pre-scan, so hostile input cannot exhaust the stack.

    Raises:
        WorkflowRejected: with one message saying why the bytes are not acceptable JSON.
            No other exception escapes, whatever the bytes.
    """
    body = bytes(data).removeprefix(codecs.BOM_UTF8)
    text = _decode(body)
    if not text.strip():
        raise WorkflowRejected(["invalid JSON: the file is empty"])
    if _too_deep(body):
        raise WorkflowRejected([f"invalid JSON: nesting deeper than {MAX_DEPTH} levels"])
    try:
        value = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise WorkflowRejected([message]) from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits
        raise WorkflowRejected([f"invalid JSON: {str(exc).split(';')[0]}"]) from exc
    if _SURROGATE_ESCAPE.search(body) and _has_surrogate(value):
        raise WorkflowRejected(["invalid JSON: a string holds a lone surrogate (\\ud800-\\udfff)"])
    return value


def _decode(body: bytes) -> str:
    """Decode UTF-8, naming UTF-16 and UTF-32 when the bytes look like them."""
    if body.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        found = "UTF-32 (it starts with a UTF-32 byte-order mark)"
    elif body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        found = "UTF-16 (it starts with a UTF-16 byte-order mark)"
    elif b"\x00" in body[:2]:
        # JSON starts with an ASCII character, so a NUL in the first two bytes means
        # a wider encoding without a byte-order mark.
        wide = "UTF-32" if body[:4].count(0) == 3 else "UTF-16"
        found = f"{wide} (NUL bytes between its characters)"
    else:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = exc.start
            message = f"not UTF-8: invalid byte 0x{body[at]:02x} at offset {at}"
            raise WorkflowRejected([message]) from exc
    raise WorkflowRejected([f"not UTF-8: the file looks like {found}; save it as UTF-8"])


def _too_deep(body: bytes) -> bool:
    """Whether arrays and objects nest deeper than MAX_DEPTH, strings ignored."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    brackets = _STRING_TOKEN.sub(b"", body).translate(None, _NOT_BRACKETS)
    opened = accumulate(brackets.translate(_OPENS))
    closed = accumulate(brackets.translate(_CLOSES))
    # accumulate, map and filter run in C, lazily: the scan stops at the first level too deep
    depths = map(operator.sub, opened, closed)
    return next(filter(partial(operator.lt, MAX_DEPTH), depths), None) is not None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        key = next(k for k, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise WorkflowRejected([f"invalid JSON: duplicate key {_show(key)}"])
    return obj


def _constant(name: str) -> Any:
    raise WorkflowRejected([f"invalid JSON: {name} is not a JSON number"])


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WorkflowRejected([f"invalid JSON: number {_show(text)} is out of range"])
    return value


def _has_surrogate(value: Any) -> bool:
    """Whether any string (key or value) nested in ``value`` holds a surrogate code point."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _show(value: Any) -> str:
    """A short, one-line rendering of a JSON value for a problem message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return str(value)[:60]


# --- Workflow validation


def parse_workflow(data: bytes | Mapping[str, Any], catalog: TaskCatalog) -> WorkflowDef:
    """Validate a workflow file and return its typed definition.

    Every problem is collected before anything is raised: the file's shape, each node's
    fields, its task type and params (through ``catalog``), unknown dependencies, a cycle,
    and references to nodes that are not ancestors. Unknown keys are problems too, so a
    misspelt optional key cannot pass silently.

    Args:
        data: the file's bytes, or an already parsed JSON object.
        catalog: the task types known (the registry), which also checks params.

    Raises:
        WorkflowRejected: listing every problem, each one line naming where it is.
    """
    doc = data if isinstance(data, Mapping) else load_json(data)
    if not isinstance(doc, Mapping):
        raise WorkflowRejected([f"workflow: must be a JSON object, got {_show(doc)}"])
    problems: list[str] = []
    name, timeout, key = _check_header(doc, problems)
    nodes = _check_nodes(doc, catalog, problems)
    _check_graph(nodes, problems)
    if problems:
        raise WorkflowRejected(dict.fromkeys(problems))
    return WorkflowDef(name=name, nodes=tuple(nodes), timeout=timeout, idempotency_key=key)


def _check_header(
    doc: Mapping[str, Any], problems: list[str]
) -> tuple[str, float | None, str | None]:
    """Check the top-level keys except ``nodes``; return name, timeout, idempotency_key."""
    _check_keys(doc, _TOP_KEYS, "", problems)
    name = doc.get("name")
    if "name" not in doc:
        problems.append("name: required")
    elif not isinstance(name, str) or not name.strip():
        problems.append(f"name: must be a non-empty string, got {_show(name)}")
    key = doc.get("idempotency_key")
    if "idempotency_key" in doc and (not isinstance(key, str) or not key):
        problems.append(f"idempotency_key: must be a non-empty string, got {_show(key)}")
    if not isinstance(doc.get("description", ""), str):
        problems.append(f"description: must be a string, got {_show(doc['description'])}")
    timeout = _number(doc, "timeout", "", problems, allow_zero=False)
    return (name if isinstance(name, str) else ""), timeout, (key if isinstance(key, str) else None)


def _check_keys(
    obj: Mapping[str, Any], allowed: frozenset[str], where: str, problems: list[str]
) -> None:
    if obj.keys() <= allowed:
        return
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{where}unknown key {_show(key)}{hint}")


def _number(
    obj: Mapping[str, Any], key: str, where: str, problems: list[str], *, allow_zero: bool
) -> float | None:
    """The optional finite number at ``key`` (> 0, or >= 0); None when absent or bad."""
    if key not in obj:
        return None
    value = obj[key]
    number = _as_number(value)
    if number is None or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        problems.append(f"{where}{key}: must be a number {bound}, got {_show(value)}")
        return None
    return number


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _check_nodes(
    doc: Mapping[str, Any], catalog: TaskCatalog, problems: list[str]
) -> list[NodeDef]:
    """Check each node on its own; return those with a valid id, in file order."""
    raw_nodes = doc.get("nodes")
    if "nodes" not in doc:
        problems.append("nodes: required")
        return []
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append(f"nodes: must be a non-empty list, got {_show(raw_nodes)}")
        return []
    nodes: list[NodeDef] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        node = _check_node(index, raw, catalog, problems)
        if node is not None:
            if node.id in seen:
                problems.append(f"node '{node.id}': duplicate id")
            seen.add(node.id)
            nodes.append(node)
    return nodes


def _check_node(index: int, raw: Any, catalog: TaskCatalog, problems: list[str]) -> NodeDef | None:
    """Check one node's own fields; return it, or None when it has no valid id."""
    if not isinstance(raw, Mapping):
        problems.append(f"nodes[{index}]: must be an object, got {_show(raw)}")
        return None
    node_id = _node_id(index, raw, problems)
    where = f"node '{node_id}': " if node_id else f"nodes[{index}]: "
    _check_keys(raw, _NODE_KEYS, where, problems)
    task_type = _task_type(raw, where, catalog, problems)
    params = _params(raw, where, task_type, catalog, problems)
    node = NodeDef(
        id=node_id or "",
        type=task_type or "",
        params=params,
        depends_on=_depends_on(raw, where, problems),
        timeout=_number(raw, "timeout", where, problems, allow_zero=False),
        retries=_retries(raw, where, problems),
        retry_delay=_retry_delay(raw, where, problems),
        trigger_rule=_trigger_rule(raw, where, problems),
    )
    return node if node_id else None


def _node_id(index: int, raw: Mapping[str, Any], problems: list[str]) -> str | None:
    node_id = raw.get("id")
    if "id" not in raw:
        problems.append(f"nodes[{index}].id: required")
    elif not isinstance(node_id, str):
        problems.append(f"nodes[{index}].id: must be a string, got {_show(node_id)}")
    elif not _ID.fullmatch(node_id):
        problems.append(
            f"nodes[{index}].id: {_show(node_id)} must be 1 to 64 characters of [A-Za-z0-9_-]"
        )
    else:
        return node_id
    return None


def _task_type(
    raw: Mapping[str, Any], where: str, catalog: TaskCatalog, problems: list[str]
) -> str | None:
    """The node's type when it is a known one, else None (with a problem)."""
    task_type = raw.get("type")
    if "type" not in raw:
        problems.append(f"{where}type: required")
    elif not isinstance(task_type, str):
        problems.append(f"{where}type: must be a string, got {_show(task_type)}")
    elif task_type not in catalog:
        problems.append(f"{where}unknown type {_show(task_type)}")
    else:
        return task_type
    return None


def _params(
    raw: Mapping[str, Any],
    where: str,
    task_type: str | None,
    catalog: TaskCatalog,
    problems: list[str],
) -> Mapping[str, Any]:
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        problems.append(f"{where}params: must be an object, got {_show(params)}")
        return {}
    if task_type is not None:
        problems.extend(
            f"{where}params: {' '.join(message.split())}"
            for message in catalog.check_params(task_type, params)
        )
    return params


def _depends_on(raw: Mapping[str, Any], where: str, problems: list[str]) -> tuple[str, ...]:
    value = raw.get("depends_on", [])
    if not isinstance(value, list):
        problems.append(f"{where}depends_on: must be a list of node ids, got {_show(value)}")
        return ()
    ids: dict[str, None] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"{where}depends_on[{index}]: must be a node id, got {_show(item)}")
        elif item in ids:
            problems.append(f"{where}depends_on names {_show(item)} twice")
        else:
            ids[item] = None
    return tuple(ids)


def _retry_delay(raw: Mapping[str, Any], where: str, problems: list[str]) -> float:
    delay = _number(raw, "retry_delay", where, problems, allow_zero=True)
    return 1.0 if delay is None else delay


def _retries(raw: Mapping[str, Any], where: str, problems: list[str]) -> int:
    value = raw.get("retries", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"{where}retries: must be a whole number >= 0, got {_show(value)}")
        return 0
    return value


def _trigger_rule(raw: Mapping[str, Any], where: str, problems: list[str]) -> TriggerRule:
    value = raw.get("trigger_rule", TriggerRule.ALL_SUCCESS.value)
    if isinstance(value, str) and value in _RULE_VALUES:
        return TriggerRule(value)
    problems.append(f"{where}trigger_rule: must be one of {_RULES}, got {_show(value)}")
    return TriggerRule.ALL_SUCCESS


def _check_graph(nodes: list[NodeDef], problems: list[str]) -> None:
    """Check what spans nodes: unknown dependencies, a cycle, references."""
    firsts: dict[str, NodeDef] = {}
    for node in nodes:
        firsts.setdefault(node.id, node)
    deps = {node_id: node.depends_on for node_id, node in firsts.items()}
    for node in nodes:
        problems.extend(
            f"node '{node.id}': depends_on names unknown node {_show(dep)}"
            for dep in node.depends_on
            if dep not in deps
        )
    cycle = find_cycle(deps)
    if cycle is not None:
        problems.append("cycle: " + " -> ".join(cycle))
    _check_refs(firsts, deps, problems, acyclic=cycle is None)


def _check_refs(
    nodes: Mapping[str, NodeDef],
    deps: Mapping[str, tuple[str, ...]],
    problems: list[str],
    *,
    acyclic: bool,
) -> None:
    """Every reference must name an ancestor (checked only once the graph is acyclic)."""
    refs = {node_id: find_refs(node.params) for node_id, node in nodes.items()}
    far: list[tuple[str, str]] = []
    for node_id, found in refs.items():
        if found:
            direct = set(deps[node_id])
            far.extend(
                (node_id, ref.node_id)
                for ref in found
                if ref.node_id in nodes and ref.node_id not in direct
            )
    bad = non_ancestors(deps, far) if acyclic else set()
    for node_id, found in refs.items():
        for ref in found:
            if ref.node_id not in nodes:
                problems.append(
                    f"node '{node_id}': reference {ref.text} names unknown node '{ref.node_id}'"
                )
            elif (node_id, ref.node_id) in bad:
                problems.append(
                    f"node '{node_id}': reference {ref.text} names '{ref.node_id}',"
                    f" which is not an ancestor of '{node_id}'"
                )


# --- Secrets


def is_secret_key(key: str) -> bool:
    """Return whether a param named ``key`` holds a secret that logs must not show.

    True when the key contains ``password``, ``token``, ``secret``, ``authorization`` or
    ``api_key`` in any case; ``-`` counts as ``_`` (so the header ``X-Api-Key`` matches),
    and ``apikey`` matches too.
    """
    lowered = key.lower().replace("-", "_")
    return any(word in lowered for word in _SECRET_WORDS)


def redact_secrets(value: Any) -> Any:
    """Return a copy of ``value`` in which every secret-keyed dict value is ``"***"``.

    Walks nested dicts and lists; see :func:`is_secret_key` for which keys are secret.
    """
    if isinstance(value, Mapping):
        return {
            key: "***" if isinstance(key, str) and is_secret_key(key) else redact_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(item) for item in value]
    return value
