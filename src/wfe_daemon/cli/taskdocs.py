"""The task reference (``docs/tasks.md``), generated from the registered task types.

Regenerate it after changing a task type, from the repository root::

    python -m wfe_daemon.cli.taskdocs           # rewrite docs/tasks.md
    python -m wfe_daemon.cli.taskdocs --check   # exit 1 when docs/tasks.md is stale

Only the built-in types are documented (installed plugins never leak into the file).
Everything comes from each task class: ``description``, ``category``,
``default_timeout`` and ``params_schema`` (property ``type``, ``description``,
``default``, ``enum`` and ranges), plus two optional attributes a task type may define:

- ``output_doc: ClassVar[Mapping[str, str]]``: each output key and its meaning;
- ``failure_doc: ClassVar[Sequence[str]]``: the ways a node of this type fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Task
from wfe_daemon.tasks import BUILTINS

DOC_PATH: Final = Path("docs/tasks.md")
COMMAND: Final = "python -m wfe_daemon.cli.taskdocs"

_HEADER: Final = f"""\
# Task reference

<!-- Generated from the task classes: do not edit by hand. Refresh with: {COMMAND} -->

Every built-in task type, generated from its class. After changing a task type, refresh
this file from the repository root with:

    {COMMAND}

The test suite fails while this file is stale (`{COMMAND} --check` tells without writing).
Path params are relative to `data_dir`.
"""

_BOUNDS: Final = (
    ("minimum", ">= {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"),
    ("exclusiveMaximum", "< {}"),
    ("pattern", "matching `{}`"),
)
_SIZES: Final = (("minItems", "maxItems", "item"), ("minLength", "maxLength", "character"))


def render(registry: TaskRegistry) -> str:
    """The Markdown reference of every type in ``registry``, sorted by type."""
    sections = [_HEADER, *(_section(task) for task in registry)]
    return "\n".join(sections)


def _section(task: Task) -> str:
    timeout = task.default_timeout
    lines = [
        f"## `{task.type}`: {task.display_name}",
        "",
        task.description,
        "",
        f"- Category: {task.category}",
        "- Default timeout: "
        + ("the `task_timeout` setting" if timeout is None else f"{timeout:g} s"),
        "",
        "### Params",
        "",
        *_params(task.params_schema),
        "",
        "### Output",
        "",
        *_outputs(getattr(task, "output_doc", None)),
        "",
        "### Failure modes",
        "",
        *_failures(getattr(task, "failure_doc", None)),
        "",
    ]
    return "\n".join(lines)


def _params(schema: Mapping[str, Any]) -> list[str]:
    rows = list(_rows(schema, prefix=""))
    if not rows:
        return ["Any JSON object: no fixed params."]
    table = ["| name | type | required | default | meaning |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {' | '.join(_cell(cell) for cell in row)} |" for row in rows]
    if schema.get("additionalProperties", True) is not False:
        table += ["", "Other params are accepted as well."]
    return table


def _rows(schema: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, ...]]:
    """One row per property, then the rows of its nested object properties."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        yield (
            f"`{path}`",
            _type(prop),
            "yes" if name in required else "no",
            default,
            prop.get("description", ""),
        )
        if "properties" in prop:
            yield from _rows(prop, f"{path}.")
        items = prop.get("items")
        if isinstance(items, Mapping) and "properties" in items:
            yield from _rows(items, f"{path}[].")


def _type(schema: Mapping[str, Any]) -> str:
    """A short human reading of a property schema: ``array of string (at least 1 item)``."""
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type(option) for option in schema[key])
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    items = schema.get("items")
    if isinstance(items, Mapping):
        text += f" of {_grouped(_type(items))}"
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping) and "properties" not in schema:
        text += f" of {_grouped(_type(values))}"
    notes = [schema["format"]] if "format" in schema else []
    notes += [form.format(schema[key]) for key, form in _BOUNDS if key in schema]
    notes += _sizes(schema)
    return f"{text} ({', '.join(notes)})" if notes else text


def _grouped(text: str) -> str:
    """Parenthesise an alternative, so ``array of (string or number)`` reads unambiguously."""
    return f"({text})" if " or " in text else text


def _sizes(schema: Mapping[str, Any]) -> list[str]:
    """``at least 1 item``, ``exactly 1 character``... from min/max items and lengths."""
    notes = []
    for low_key, high_key, noun in _SIZES:
        low, high = schema.get(low_key), schema.get(high_key)
        if low is not None and low == high:
            notes.append(f"exactly {low} {noun}{'s' * (low != 1)}")
            continue
        if low is not None:
            notes.append(f"at least {low} {noun}{'s' * (low != 1)}")
        if high is not None:
            notes.append(f"at most {high} {noun}{'s' * (high != 1)}")
    return notes


def _outputs(output_doc: Mapping[str, str] | None) -> list[str]:
    if not output_doc:
        return ["See the description."]
    table = ["| key | meaning |", "| --- | --- |"]
    table += [f"| `{_cell(key)}` | {_cell(meaning)} |" for key, meaning in output_doc.items()]
    return table


def _failures(failure_doc: Sequence[str] | None) -> list[str]:
    if not failure_doc:
        return ["None documented (params that break the schema always fail)."]
    return [f"- {failure}" for failure in failure_doc]


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference, or with ``--check`` exit 1 when the file is stale."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only tell whether it is stale")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help=f"default {DOC_PATH}")
    args = parser.parse_args(argv)
    text = render(TaskRegistry.load(BUILTINS, entry_point_group=None))
    path: Path = args.output
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            print(f"{path} is stale; refresh it with: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
