"""Import paths of Python functions (``package.module:name``) and the module allowlist.

The ``python`` task names its function with :data:`FUNCTION_PATTERN`; the settings
``python_modules`` holds module prefixes (:func:`parse_prefixes`), matched by whole dotted
components (:func:`allowed`). Pure: nothing here imports the module it names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from wfe_daemon.core.webhook import ValueInvalid, show_value

_NAME: Final = r"(?!__)[A-Za-z_][A-Za-z0-9_]*"
_DOTTED: Final = rf"{_NAME}(?:\.{_NAME})*"

MODULE_PATTERN: Final = rf"^{_DOTTED}$"
"""A dotted module path of ASCII identifiers, none starting with ``__``."""
FUNCTION_PATTERN: Final = rf"^{_DOTTED}:{_DOTTED}$"
"""``package.module:name``, the attribute path after the colon dotted too
(``pkg.mod:Class.method``); no name may start with ``__``."""
FUNCTION_WORDING: Final = (
    "must be 'package.module:name' (a dotted module path, a colon, a dotted attribute path "
    "of ASCII identifiers; no name may start with '__')"
)


def split_function(spec: str) -> tuple[str, list[str]]:
    """``"pkg.mod:Class.method"`` -> ``("pkg.mod", ["Class", "method"])``; the spec must
    match :data:`FUNCTION_PATTERN` (the params schema checks it first)."""
    module, _, attributes = spec.partition(":")
    return module, attributes.split(".")


def allowed(module: str, prefixes: Sequence[str]) -> bool:
    """Whether ``module`` is under one of ``prefixes`` by whole dotted components
    (``mypkg`` allows ``mypkg`` and ``mypkg.jobs``, not ``mypkg2``); no prefixes: any."""
    if not prefixes:
        return True
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes)


def refusal(module: str, prefixes: Sequence[str]) -> str | None:
    """Why ``module`` may not be imported under the allowlist ``prefixes``, or ``None``."""
    if allowed(module, prefixes):
        return None
    return f"module {module!r} is outside python_modules ({', '.join(prefixes)})"


def parse_prefixes(value: object, text_ok: bool) -> tuple[str, ...]:
    """The ``python_modules`` setting: a list of module prefixes, or (``text_ok``, from the
    environment or a flag) one comma-separated string; duplicates dropped.

    Raises:
        ValueInvalid: not a list of strings, or an entry that is not a dotted module path.
    """
    if text_ok and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ValueInvalid(f"must be a list of module names, got {show_value(value)}")
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(MODULE_PATTERN, item.strip()):
            raise ValueInvalid(
                f"must be dotted module names like mypkg.jobs, got {show_value(item)}"
            )
    return tuple(dict.fromkeys(item.strip() for item in value))


__all__ = [
    "FUNCTION_PATTERN",
    "FUNCTION_WORDING",
    "MODULE_PATTERN",
    "allowed",
    "parse_prefixes",
    "refusal",
    "split_function",
]
