"""The workflow model: typed definitions, statuses, strict loading and validation. Pure."""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, Protocol

from wfe_daemon.core.dag import find_cycles, non_ancestors
from wfe_daemon.core.inputs import (
    INPUT_KEYS,
    InputCatalog,
    RunInputs,
    check_inputs,
    check_reserved_refs,
    reserved_id_problem,
)
from wfe_daemon.core.refs import RESERVED, Ref, find_refs, only_refs
from wfe_daemon.core.strictjson import compact, load_json, show
from wfe_daemon.errors import WorkflowRejected

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
        return self is not NodeStatus.PENDING and self is not NodeStatus.RUNNING


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
    refs: tuple[Ref, ...] = ()
    """The ``{{ references }}`` in ``params``, found once at validation."""


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A validated workflow: nodes in file order, every reference checked."""

    name: str
    nodes: tuple[NodeDef, ...]
    timeout: float | None = None
    """Seconds for the whole run; ``None`` means ``max_workflow_duration``."""
    idempotency_key: str | None = None
    params: Mapping[str, JSON] | None = None
    """The JSON Schema of the run's parameters, as written; None when not declared."""
    arguments: Mapping[str, JSON] = field(default_factory=dict)
    """The run's parameter values, checked against ``params``, defaults filled."""
    scheduled_for: str | None = None
    """The time the run is for (ISO 8601 with an offset): ``{{ run.scheduled_for }}``."""

    def node(self, node_id: str) -> NodeDef:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


class TaskCatalog(InputCatalog, Protocol):
    """What validation needs to know of the task types (the registry provides it), and of
    a run's inputs (its arguments' schema check, which secrets exist)."""

    def __contains__(self, task_type: object) -> bool: ...

    def refusal(self, task_type: str) -> str | None:
        """Why a known ``task_type`` may not be used here (turned off by a setting), or None."""
        ...

    def check_params(self, task_type: str, params: Mapping[str, JSON]) -> list[str]:
        """Return one message per way ``params`` fails the type's schema (empty when valid).

        Values that contain a ``{{ reference }}`` are not judged here: they are checked
        once resolved, when the node starts.
        """
        ...


MAX_RETRIES: Final = 100
MAX_RETRY_DELAY_S: Final = 3600.0
MAX_TIMEOUT_S: Final = 30 * 86400.0
"""The largest ``timeout`` a node or a workflow may set: 30 days."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOP_KEYS = frozenset({"name", "nodes", "timeout", "idempotency_key", "description"})
_TOP_KEYS |= INPUT_KEYS
_NODE_KEYS = frozenset(
    {"id", "type", "depends_on", "params", "timeout", "retries", "retry_delay", "trigger_rule"}
)
_SECRET_WORDS = ("password", "token", "secret", "authorization", "api_key", "apikey")
_RULE_BY_VALUE = {rule.value: rule for rule in TriggerRule}  # TriggerRule(value) is slower
_RULES = ", ".join(rule.value for rule in TriggerRule)

# --- Workflow validation


def parse_workflow(data: bytes | Mapping[str, Any], catalog: TaskCatalog) -> WorkflowDef:
    """Validate a workflow file and return its typed definition.

    Every problem is collected before anything is raised: the file's shape, each node's
    fields, its task type (known, and not refused by the settings) and params (through
    ``catalog``), unknown dependencies, every cycle, and references to nodes that are not
    ancestors. Unknown keys are problems too, so a misspelt optional key cannot pass
    silently.

    Args:
        data: the file's bytes, or an already parsed JSON object.
        catalog: the task types known (the registry), which also checks params.

    Raises:
        WorkflowRejected: listing every problem, each one line naming where it is.
    """
    doc = data if isinstance(data, Mapping) else load_json(data)
    if not isinstance(doc, Mapping):
        raise WorkflowRejected([f"workflow: must be a JSON object, got {show(doc)}"])
    problems: list[str] = []
    name, timeout, key = _check_header(doc, problems)
    inputs = check_inputs(doc, catalog, problems)
    nodes = _check_nodes(doc, catalog, problems)
    _check_graph(nodes, problems, inputs, catalog)
    if problems:
        raise WorkflowRejected(dict.fromkeys(problems))
    return WorkflowDef(
        name=name,
        nodes=tuple(nodes),
        timeout=timeout,
        idempotency_key=key,
        params=inputs.params,
        arguments=inputs.arguments,
        scheduled_for=inputs.scheduled_for,
    )


def _check_header(
    doc: Mapping[str, Any], problems: list[str]
) -> tuple[str, float | None, str | None]:
    """Check the top-level keys except ``nodes``; return name, timeout, idempotency_key."""
    _check_keys(doc, _TOP_KEYS, "", problems)
    name = doc.get("name")
    if "name" not in doc:
        problems.append("name: required")
    elif not isinstance(name, str) or not name.strip():
        problems.append(f"name: must be a non-empty string, got {show(name)}")
    key = doc.get("idempotency_key")
    if "idempotency_key" in doc and (not isinstance(key, str) or not key):
        problems.append(f"idempotency_key: must be a non-empty string, got {show(key)}")
    if not isinstance(doc.get("description", ""), str):
        problems.append(f"description: must be a string, got {show(doc['description'])}")
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
            problems.append(f"{where}unknown key {show(key)}{hint}")


def _number(
    obj: Mapping[str, Any],
    key: str,
    where: str,
    problems: list[str],
    *,
    allow_zero: bool,
    maximum: float = MAX_TIMEOUT_S,
) -> float | None:
    """The optional number at ``key`` (> 0, or >= 0, up to ``maximum``); None when absent
    or bad. The maximum keeps timers and backoff arithmetic within range."""
    if key not in obj:
        return None
    value = obj[key]
    number = _as_number(value)
    if number is None or number < 0 or (number == 0 and not allow_zero) or number > maximum:
        bound = f"{'>= 0' if allow_zero else '> 0'} and at most {maximum:.0f}"
        problems.append(f"{where}{key}: must be a number {bound}, got {show(value)}")
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
        problems.append(f"nodes: must be a non-empty list, got {show(raw_nodes)}")
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
    if not isinstance(raw, dict | Mapping):  # dict first: the ABC check is slower
        problems.append(f"nodes[{index}]: must be an object, got {show(raw)}")
        return None
    node_id = _node_id(index, raw, problems)
    where = f"node '{node_id}': " if node_id else f"nodes[{index}]: "
    _check_keys(raw, _NODE_KEYS, where, problems)
    task_type = _task_type(raw, where, catalog, problems)
    params = _params(raw, where, task_type, catalog, problems)
    node = NodeDef(
        id=node_id or "",
        type=sys.intern(task_type or ""),  # shared: a 100k-node file names a few types
        params=params,
        depends_on=_depends_on(raw, where, problems),
        timeout=_number(raw, "timeout", where, problems, allow_zero=False),
        retries=_retries(raw, where, problems),
        retry_delay=_retry_delay(raw, where, problems),
        trigger_rule=_trigger_rule(raw, where, problems),
        refs=tuple(find_refs(params)),
    )
    return node if node_id else None


def _node_id(index: int, raw: Mapping[str, Any], problems: list[str]) -> str | None:
    node_id = raw.get("id")
    if "id" not in raw:
        problems.append(f"nodes[{index}].id: required")
    elif not isinstance(node_id, str):
        problems.append(f"nodes[{index}].id: must be a string, got {show(node_id)}")
    elif not _ID.fullmatch(node_id):
        problems.append(
            f"nodes[{index}].id: {show(node_id)} must be 1 to 64 characters of [A-Za-z0-9_-]"
        )
    elif node_id in RESERVED:
        problems.append(f"nodes[{index}].id: {reserved_id_problem(node_id)}")
    else:
        return node_id
    return None


def _task_type(
    raw: Mapping[str, Any], where: str, catalog: TaskCatalog, problems: list[str]
) -> str | None:
    """The node's type when it is a known one, else None (with a problem); a known type the
    catalog refuses (turned off by a setting) is returned, with its problem."""
    task_type = raw.get("type")
    if "type" not in raw:
        problems.append(f"{where}type: required")
    elif not isinstance(task_type, str):
        problems.append(f"{where}type: must be a string, got {show(task_type)}")
    elif task_type not in catalog:
        problems.append(f"{where}unknown type {show(task_type)}")
    else:
        refusal = catalog.refusal(task_type)
        if refusal is not None:
            problems.append(f"{where}{refusal}")
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
    if not isinstance(params, dict | Mapping):  # dict first: the ABC check is slower
        problems.append(f"{where}params: must be an object, got {show(params)}")
        return {}
    messages = catalog.check_params(task_type, params) if task_type is not None else []
    if messages:
        problems.extend(f"{where}params: {' '.join(message.split())}" for message in messages)
    return params


def _depends_on(raw: Mapping[str, Any], where: str, problems: list[str]) -> tuple[str, ...]:
    value = raw.get("depends_on", [])
    if not isinstance(value, list):
        problems.append(f"{where}depends_on: must be a list of node ids, got {show(value)}")
        return ()
    ids: dict[str, None] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"{where}depends_on[{index}]: must be a node id, got {show(item)}")
        elif item in ids:
            problems.append(f"{where}depends_on names {show(item)} twice")
        else:
            ids[item] = None
    return tuple(map(sys.intern, ids))  # one object per distinct id, not one per edge


def _retry_delay(raw: Mapping[str, Any], where: str, problems: list[str]) -> float:
    delay = _number(raw, "retry_delay", where, problems, allow_zero=True, maximum=MAX_RETRY_DELAY_S)
    return 1.0 if delay is None else delay


def _retries(raw: Mapping[str, Any], where: str, problems: list[str]) -> int:
    value = raw.get("retries", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        problems.append(
            f"{where}retries: must be a whole number from 0 to {MAX_RETRIES}, got {show(value)}"
        )
        return 0
    return value


def _trigger_rule(raw: Mapping[str, Any], where: str, problems: list[str]) -> TriggerRule:
    value = raw.get("trigger_rule", TriggerRule.ALL_SUCCESS)
    rule = _RULE_BY_VALUE.get(value) if isinstance(value, str) else None
    if rule is not None:
        return rule
    problems.append(f"{where}trigger_rule: must be one of {_RULES}, got {show(value)}")
    return TriggerRule.ALL_SUCCESS


def _check_graph(
    nodes: list[NodeDef], problems: list[str], inputs: RunInputs, catalog: InputCatalog
) -> None:
    """Check what spans nodes: unknown dependencies, every cycle, references."""
    firsts: dict[str, NodeDef] = {}
    for node in nodes:
        firsts.setdefault(node.id, node)
    deps = {node_id: node.depends_on for node_id, node in firsts.items()}
    problems.extend(
        f"node '{node.id}': depends_on names unknown node {show(dep)}"
        for node in nodes
        for dep in node.depends_on
        if dep not in deps
    )
    cycles = find_cycles(deps, limit=_MAX_CYCLES + 1)
    problems.extend("cycle: " + " -> ".join(cycle) for cycle in cycles[:_MAX_CYCLES])
    if len(cycles) > _MAX_CYCLES:
        problems.append(f"cycle: more than {_MAX_CYCLES}; fix those named and validate again")
    _check_refs(firsts, deps, problems)
    reserved = ((n.id, ref) for n in firsts.values() for ref in n.refs if ref.node_id in RESERVED)
    problems.extend(check_reserved_refs(reserved, inputs, catalog))


_MAX_CYCLES: Final = 20
"""Cycles named at most: a dense tangle has more than anyone reads (and than is cheap)."""


def _check_refs(
    nodes: Mapping[str, NodeDef], deps: Mapping[str, tuple[str, ...]], problems: list[str]
) -> None:
    """Every reference must name an ancestor (in a cycle, each member is everyone's)."""
    far: list[tuple[str, str]] = []
    for node_id, node in nodes.items():
        if node.refs:
            direct = set(deps[node_id])
            far += [
                (node_id, ref.node_id)
                for ref in node.refs
                if ref.node_id in nodes and ref.node_id not in direct
            ]
    bad = non_ancestors(deps, far)
    for node_id, node in nodes.items():
        for ref in node.refs:
            if ref.node_id in RESERVED:
                continue  # checked by check_reserved_refs
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


REDACTED = "***"
"""What a secret param shows as in logs, summaries and the database."""


def public_definition(text: str, doc: Any) -> str:
    """The workflow file as the database keeps it: secrets redacted.

    The file's own text when none of its keys holds a secret (nothing to redact, nothing
    to re-encode), else the parsed document with secrets redacted, as JSON. Keys are
    judged decoded, so an escaped ``"pass\\u0077ord"`` is caught too.
    """
    if "\\" not in text and not _names_a_secret(text):
        return text  # no key can be secret-named: no need to walk the document
    redacted = redact_secrets(doc)
    if redacted is doc:
        return text
    return compact(redacted)


def _names_a_secret(text: str) -> bool:
    """Whether ``text`` holds a secret word anywhere, as :func:`is_secret_key` judges a key
    (for a whole file: a milliseconds-long scan, where the walk takes tens)."""
    lowered = text.lower().replace("-", "_")
    return any(word in lowered for word in _SECRET_WORDS)


def holds_redacted(value: Any) -> bool:
    """Whether a secret-keyed value somewhere in ``value`` reads ``***`` (was redacted)."""
    if isinstance(value, Mapping):
        return any(
            (isinstance(key, str) and is_secret_key(key) and item == REDACTED)
            or holds_redacted(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(holds_redacted(item) for item in value)
    return False


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Return whether a param named ``key`` holds a secret that logs must not show.

    True when the key contains ``password``, ``token``, ``secret``, ``authorization`` or
    ``api_key`` in any case; ``-`` counts as ``_`` (so the header ``X-Api-Key`` matches),
    and ``apikey`` matches too. Memoised: it runs for every key of every log line.
    """
    return _names_a_secret(key)


_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def hide_url_secrets(text: str) -> str:
    """``text`` with what each URL in it may carry secretly shown as ``***``.

    That is a URL's user info (``user:password@``, or a token given as the user name) and
    the values of its secret-named query or fragment parameters (``?api_key=...``,
    ``#access_token=...``; see :func:`is_secret_key`). The rest is left as written. For
    messages (task errors, validation problems): what is sent is not changed.
    """
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: _hidden_url(match.group()), text)


def _hidden_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query, fragment = _hide_pairs(parts.query), _hide_pairs(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def _hide_pairs(text: str) -> str:
    from urllib.parse import unquote_plus

    if "=" not in text:
        return text
    pairs = (pair.partition("=") for pair in text.split("&"))
    return "&".join(
        f"{name}=***" if eq and is_secret_key(unquote_plus(name)) else f"{name}{eq}{value}"
        for name, eq, value in pairs
    )


def printable(text: str) -> str:
    """``text`` as valid Unicode: undecodable bytes of a file name (which ``os`` decodes to
    lone surrogates) shown as ``\\xff``, any other lone surrogate as ``\\ud800``."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def redact_secrets(value: Any) -> Any:
    """Return ``value`` with every secret-keyed dict value replaced by ``"***"``.

    Walks nested dicts and lists; see :func:`is_secret_key` for which keys are secret.
    A value made of references alone (``{{ secrets.db }}``, ``Bearer {{ secrets.api }}``,
    see :func:`~wfe_daemon.core.refs.only_refs`) is kept: a reference is not the secret.
    Containers that hold nothing secret are returned as they are, not copied: treat the
    result as read-only.
    """
    if isinstance(value, Mapping):
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key):
                new = item if isinstance(item, str) and only_refs(item) else REDACTED
            else:
                new = redact_secrets(item)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return value if changed is None else changed
    if isinstance(value, list | tuple):
        items = [redact_secrets(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items
    return value
