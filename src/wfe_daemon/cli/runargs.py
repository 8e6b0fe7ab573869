"""A run's arguments from the command line: ``-p KEY=VALUE`` and ``--params-file FILE``.

They join the workflow document's own top-level ``arguments`` before it is validated or
sent (``-p`` wins over ``--params-file``, which wins over the document), so every command
that starts a run hands the daemon one document, as a file in the inbox would.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wfe_daemon.core.model import printable
from wfe_daemon.core.strictjson import compact, load_json, show
from wfe_daemon.errors import UsageError, WorkflowRejected

__all__ = ["add_argument_flags", "given_arguments", "with_arguments"]


def add_argument_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``-p/--param KEY=VALUE`` (repeatable) and ``--params-file FILE`` to ``parser``."""
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a value for the workflow's params (JSON when it parses as JSON, else text)",
    )
    parser.add_argument(
        "--params-file",
        type=Path,
        metavar="FILE",
        help="a JSON object of values for the workflow's params (-p wins over it)",
    )


def given_arguments(
    pairs: Sequence[str], params_file: Path | None, max_size: int
) -> dict[str, Any]:
    """The arguments given: ``params_file``'s object, then each ``KEY=VALUE`` of ``pairs``
    over it. A value is parsed as JSON when it parses (``3``, ``true``, ``["a"]``), else
    kept as text (``2026-12-04``).

    Raises:
        UsageError: a pair has no ``=`` or no key, or is not UTF-8 text; the file
            cannot be read, is over ``max_size`` bytes, or does not hold a JSON object.
    """
    given = {} if params_file is None else _read_params_file(params_file, max_size)
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"-p: expected KEY=VALUE, got {printable(pair)!r}")
        if not _is_unicode(key):
            raise UsageError(f"-p: the parameter name '{printable(key)}' is not UTF-8 text")
        if not _is_unicode(text):
            raise UsageError(f"-p: the value of {key!r} is not UTF-8 text")
        given[key] = _value(text)
    return given


def _is_unicode(text: str) -> bool:
    """Whether ``text`` (from ``argv``, where undecodable bytes are lone surrogates)
    is valid Unicode, which a JSON document can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _value(text: str) -> Any:
    try:
        return load_json(text.encode("utf-8"))
    except WorkflowRejected:
        return text


def _read_params_file(path: Path, max_size: int) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = file.read(max_size + 1)
    except OSError as exc:
        raise UsageError(f"--params-file: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_size:
        raise UsageError(f"--params-file: {path} is over max_file_size {max_size}")
    try:
        values = load_json(data)
    except WorkflowRejected as exc:
        raise UsageError(f"--params-file: {path}: {'; '.join(exc.problems)}") from None
    if not isinstance(values, dict):
        raise UsageError(
            f"--params-file: {path} must hold a JSON object of parameter values, got {show(values)}"
        )
    return values


def with_arguments(data: bytes, given: Mapping[str, Any]) -> bytes:
    """The workflow document ``data`` with ``given`` merged over its own ``arguments``.

    ``data`` is returned as it is when nothing is given, or when it is not a JSON object
    with an object (or no) ``arguments``: validation then reports what is wrong with it.
    """
    if not given:
        return data
    try:
        doc = load_json(data)
    except WorkflowRejected:
        return data
    if not isinstance(doc, dict):
        return data
    own = doc.get("arguments", {})
    if not isinstance(own, dict):
        return data
    doc["arguments"] = {**own, **given}
    return compact(doc).encode()
