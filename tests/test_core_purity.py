"""The package's layers: the pure core imports only the stdlib, each layer imports only the
layers below it, and no module imports itself back through others, lazily or not.

Every import of every module counts: top-level ones, those inside functions (lazy, kept
for start-up time) and those under ``if TYPE_CHECKING:``, since each names a dependency a
lazy import only hides. Importing ``wfe_daemon.tasks.csv.tasks`` also runs
``wfe_daemon/tasks/__init__.py``, so a module depends on its parent package too (not on
the root package, whose ``__init__`` imports its API on first use).

The layers, bottom to top (:data:`LAYERS`), and which module sits in which
(:data:`MODULES`; a package's entry covers its modules):

- ``core``: the exception tree, settings, logging, and the pure model (model, strictjson,
  dag, refs, rules, summary, records, nodestate) with the small helpers everything uses
  (clock, faults, taskgroup: the store and the shell task own background tasks with it).
- ``store``: the SQLite repository and its migrations. It sits *below* the runtime: the
  engine records every transition in the store, and the store needs nothing above core.
- ``runtime``: the engine, its timer, the attempt wrappers, the registry and ``task`` (the
  contract of a task type, with the package root that exports it to plugins).
- ``tasks``: the built-in task types, *beside* the runtime: they may import core, ``task``
  and each other, and only the layers above the runtime may import them.
- ``cluster``: the Dask executor, both ends: the client in the daemon that sends node
  attempts to a Dask cluster, and the module every ``dask worker`` preloads to run them.
- ``service``: the daemon and what it runs (intake, outbox, submission, recovery,
  cancel, retry, retention, metrics, systemd), the file reader, the stop policy, and the wiring of
  registry, services and engine.
- ``web``: the HTTP server (the API, the page, ``/metrics`` and ``/healthz``), which the
  daemon is handed as its front.
- ``cli``: the commands and what they print.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import wfe_daemon

PACKAGE = "wfe_daemon"
PACKAGE_DIR = Path(wfe_daemon.__file__).parent

LAYERS = ("core", "store", "runtime", "tasks", "cluster", "service", "web", "cli")
"""Bottom to top: a module may import its own layer and those before it (but see ``tasks``)."""

TASKS_MAY_IMPORT = {"core", "tasks", f"{PACKAGE}.runtime", f"{PACKAGE}.runtime.task"}
"""``tasks`` sits beside the runtime: of it, the task modules see only ``task``."""

MODULES: Mapping[str, str] = {
    "": "runtime",  # the package root: the plugin API, re-exported from runtime.task and errors
    "__main__": "cli",
    "clock": "core",
    "config": "core",
    "errors": "core",
    "faults": "core",
    "logs": "core",
    "taskgroup": "core",
    "core": "core",
    "store": "store",
    "runtime": "runtime",
    "tasks": "tasks",
    "cluster": "cluster",
    "service": "service",
    "web": "web",
    "cli": "cli",
}
"""Each module's layer, by its name under the package (a package's entry covers its modules)."""

CORE = (
    "core/model.py",
    "core/strictjson.py",
    "core/dag.py",
    "core/refs.py",
    "core/rules.py",
    "core/summary.py",
    "core/records.py",
    "core/nodestate.py",
    "core/inputs.py",
    "core/masking.py",
    "core/paramschema.py",
)
ALLOWED_OWN = {
    "wfe_daemon.errors",
    "wfe_daemon.core.model",
    "wfe_daemon.core.strictjson",
    "wfe_daemon.core.dag",
    "wfe_daemon.core.refs",
    "wfe_daemon.core.rules",
    "wfe_daemon.core.summary",
    "wfe_daemon.core.records",
    "wfe_daemon.core.inputs",
    "wfe_daemon.core.masking",
    "wfe_daemon.core.paramschema",
}
FORBIDDEN = {"anyio", "aiosqlite", "httpx", "structlog", "jsonschema", "asyncio", "watchfiles"}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is, and how it runs."""

    target: str
    line: int
    how: str
    """``""`` at the top level, ``"lazy"`` in a function, ``"TYPE_CHECKING"`` under that
    guard, ``"parent"`` for the package a module is in (importing it runs the package)."""

    def where(self, module: str) -> str:
        how = f", {self.how}" if self.how else ""
        return f"{module}:{self.line}{how}"

    def says(self, module: str) -> str:
        if self.how == "parent":
            return f"{module} is in the package {self.target}"
        return f"{self.where(module)} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: Iterable[ast.AST], how: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import among ``nodes`` and below, with how it runs (the innermost guard wins)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, how
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, "TYPE_CHECKING")
            yield from _walk(node.orelse, how)
        else:
            inner = (
                how or "lazy" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else how
            )
            yield from _walk(ast.iter_child_nodes(node), inner)


def _imports(path: Path) -> list[tuple[str, int, str, list[str]]]:
    """``(module, line, how, names)`` of each import in ``path`` (``names``: what a
    ``from module import ...`` takes, which may be modules of a package)."""
    found = []
    for node, how in _walk([ast.parse(path.read_text(encoding="utf-8"))], ""):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, how, []) for alias in node.names)
        else:
            assert node.level == 0, f"{path.name}:{node.lineno}: relative import"
            names = [alias.name for alias in node.names]
            found.append((node.module or "", node.lineno, how, names))
    return found


def _targets(module: str, names: list[str], modules: Mapping[str, Path]) -> list[str]:
    """The package modules an import statement loads: ``from pkg import mod`` loads
    ``pkg.mod``, and ``pkg`` itself only when it also takes a name defined there."""
    submodules = [f"{module}.{name}" for name in names if f"{module}.{name}" in modules]
    whole = [module] if len(submodules) < len(names) or not names else []
    return [target for target in [*whole, *submodules] if target in modules]


def _graph() -> dict[str, list[Import]]:
    """Each package module's imports of package modules, parent packages included."""
    modules = _package_modules()
    graph: dict[str, list[Import]] = {}
    for name, path in modules.items():
        edges: dict[str, Import] = {}
        parent = name.rpartition(".")[0]
        if parent not in ("", PACKAGE):
            edges[parent] = Import(parent, 0, "parent")
        for module, line, how, names in _imports(path):
            for target in _targets(module, names, modules):
                if target != name and target not in edges:
                    edges[target] = Import(target, line, how)
        graph[name] = list(edges.values())
    return graph


def find_cycle(graph: Mapping[str, list[Import]]) -> list[tuple[str, Import]] | None:
    """The edges of one import cycle, in order, or ``None`` (a depth-first search)."""
    done: set[str] = set()
    path: list[tuple[str, Import]] = []
    on_path: dict[str, int] = {}

    def visit(module: str) -> list[tuple[str, Import]] | None:
        on_path[module] = len(path)
        for edge in graph.get(module, []):
            if edge.target in on_path:
                return [*path[on_path[edge.target] :], (module, edge)]
            if edge.target not in done:
                path.append((module, edge))
                cycle = visit(edge.target)
                if cycle is not None:
                    return cycle
                path.pop()
        del on_path[module]
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle is not None:
                return cycle
    return None


def find_cycles(graph: Mapping[str, list[Import]]) -> list[list[tuple[str, Import]]]:
    """Import cycles until none is left, each found once its predecessors' last edges are cut."""
    remaining = {module: list(edges) for module, edges in graph.items()}
    cycles = []
    while (cycle := find_cycle(remaining)) is not None:
        cycles.append(cycle)
        module, edge = cycle[-1]
        remaining[module].remove(edge)
    return cycles


def describe(cycle: list[tuple[str, Import]]) -> str:
    """``a -> b -> a`` with where each import is (file line, lazy or TYPE_CHECKING)."""
    names = " -> ".join([module for module, _ in cycle] + [cycle[0][0]])
    steps = "; ".join(edge.says(module) for module, edge in cycle)
    return f"import cycle: {names} ({steps})"


def layer_of(module: str) -> str | None:
    """The layer of ``module`` from the longest entry of :data:`MODULES` covering it."""
    relative = module.removeprefix(PACKAGE).removeprefix(".")
    parts = relative.split(".") if relative else []
    for end in range(len(parts), -1, -1):
        key = ".".join(parts[:end])
        if key in MODULES:
            return MODULES[key]
    return None


def may_import(module: str, target: str) -> bool:
    """Whether ``module``'s layer may import ``target`` (see the module docstring)."""
    mine, theirs = layer_of(module), layer_of(target)
    assert mine is not None and theirs is not None
    if mine == "tasks":
        return theirs in TASKS_MAY_IMPORT or target in TASKS_MAY_IMPORT
    if theirs == "tasks":
        return LAYERS.index(mine) > LAYERS.index("tasks")
    return LAYERS.index(theirs) <= LAYERS.index(mine)


def test_every_module_has_a_layer() -> None:
    """A module missing from the table fails: its layer is a decision to write down."""
    missing = [name for name in _package_modules() if layer_of(name) is None]
    assert not missing, f"add these modules to MODULES in {Path(__file__).name}: {missing}"


def test_every_table_entry_names_a_module() -> None:
    """An entry for a module that no longer exists fails, so the table follows renames."""
    names = {name.removeprefix(PACKAGE).removeprefix(".") for name in _package_modules()}
    stale = sorted(set(MODULES) - names)
    assert not stale, f"MODULES names modules that do not exist: {stale}"
    assert set(MODULES.values()) <= set(LAYERS)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    """No module imports a module of a higher layer, lazily or not (tasks: core and task)."""
    wrong = [
        f"{edge.where(module)}: {module} ({layer_of(module)}) imports"
        f" {edge.target} ({layer_of(edge.target)})"
        for module, edges in _graph().items()
        if layer_of(module) is not None
        for edge in edges
        if layer_of(edge.target) is not None and not may_import(module, edge.target)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_among_the_package_modules() -> None:
    """No module imports itself back through others, counting lazy and type-only imports."""
    cycles = find_cycles(_graph())
    assert not cycles, "\n".join(describe(cycle) for cycle in cycles)


def test_a_cycle_is_reported_with_its_path() -> None:
    """The cycle check names each module of the cycle and where each import is."""
    graph = {
        "a": [Import("b", 3, "")],
        "b": [Import("c", 7, "lazy")],
        "c": [Import("b", 9, "TYPE_CHECKING")],
    }
    cycle = find_cycle(graph)
    assert cycle is not None
    assert describe(cycle) == (
        "import cycle: b -> c -> b (b:7, lazy imports c; c:9, TYPE_CHECKING imports b)"
    )
    assert find_cycle({"a": [Import("b", 1, "")], "b": []}) is None
    graph["c"].append(Import("a", 5, ""))
    graph["a"].append(Import("d", 0, "parent"))
    graph["d"] = [Import("a", 2, "")]
    assert [describe(cycle) for cycle in find_cycles(graph)] == [
        "import cycle: b -> c -> b (b:7, lazy imports c; c:9, TYPE_CHECKING imports b)",
        "import cycle: a -> b -> c -> a (a:3 imports b; b:7, lazy imports c; c:5 imports a)",
        "import cycle: a -> d -> a (a is in the package d; d:2 imports a)",
    ]


def test_lazy_and_type_checking_imports_are_seen(tmp_path: Path) -> None:
    """Imports inside functions and under ``if TYPE_CHECKING:`` are found, and marked so."""
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from wfe_daemon.store.database import Store\n"
        "def f():\n"
        "    import wfe_daemon.runtime.engine\n"
        "    if TYPE_CHECKING:\n"
        "        import wfe_daemon.core.dag\n"
    )
    found = {(name, how) for name, _, how, _ in _imports(source)}
    assert ("os", "") in found
    assert ("wfe_daemon.store.database", "TYPE_CHECKING") in found
    assert ("wfe_daemon.runtime.engine", "lazy") in found
    assert ("wfe_daemon.core.dag", "TYPE_CHECKING") in found


def test_the_layer_rules() -> None:
    """Imports go down or sideways; tasks see core and task only; runtime never sees tasks."""
    assert may_import("wfe_daemon.runtime.engine", "wfe_daemon.store.database")
    assert not may_import("wfe_daemon.store.database", "wfe_daemon.runtime.engine")
    assert may_import("wfe_daemon.tasks.csv.tasks", "wfe_daemon.runtime.task")
    assert may_import("wfe_daemon.tasks.csv.tasks", "wfe_daemon.tasks.csv.plan")
    assert not may_import("wfe_daemon.tasks.csv.tasks", "wfe_daemon.runtime.registry")
    assert not may_import("wfe_daemon.runtime.registry", "wfe_daemon.tasks")
    assert may_import("wfe_daemon.service.wiring", "wfe_daemon.tasks")
    assert layer_of("wfe_daemon.tasks.http.task") == "tasks"
    assert layer_of("wfe_daemon") == "runtime"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_only_stdlib_and_core(module: str) -> None:
    """A core module imports nothing outside the stdlib, errors and the core itself."""
    for name, _, _, _ in _imports(PACKAGE_DIR / module):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{module} imports {name}"
        if top == "wfe_daemon":
            assert name in ALLOWED_OWN, f"{module} imports {name}"
        else:
            assert top in sys.stdlib_module_names, f"{module} imports {name}"
