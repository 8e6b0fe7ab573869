"""The pure core (model, dag, refs, rules, summary, records, nodestate) imports only the
stdlib and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import wfe_daemon

CORE = (
    "model.py",
    "strictjson.py",
    "dag.py",
    "refs.py",
    "rules.py",
    "summary.py",
    "records.py",
    "nodestate.py",
)
ALLOWED_OWN = {
    "wfe_daemon.errors",
    "wfe_daemon.model",
    "wfe_daemon.strictjson",
    "wfe_daemon.dag",
    "wfe_daemon.refs",
    "wfe_daemon.rules",
    "wfe_daemon.summary",
    "wfe_daemon.records",
}
FORBIDDEN = {"anyio", "aiosqlite", "httpx", "structlog", "jsonschema", "asyncio", "watchfiles"}
PACKAGE_DIR = Path(wfe_daemon.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_only_stdlib_and_core(module: str) -> None:
    """A core module imports nothing outside the stdlib, errors and the core itself."""
    for name in _imports(PACKAGE_DIR / module):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{module} imports {name}"
        if top == "wfe_daemon":
            assert name in ALLOWED_OWN, f"{module} imports {name}"
        else:
            assert top in sys.stdlib_module_names, f"{module} imports {name}"
