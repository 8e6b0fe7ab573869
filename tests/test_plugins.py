"""Plugins: a task type installed from another package through the ``wfe_daemon.tasks`` group.

The plugin under ``tests/plugin_pkg`` is installed with pip into a throwaway folder
(``--target``), which the CLI subprocess gets on its PYTHONPATH: ``importlib.metadata``
then finds the entry point in its dist-info. The project's own environment is untouched.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wfe_daemon
from daemon_helpers import Daemons, drop, wait_result
from wfe_daemon.config import Settings

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
ENTRY_POINT = 'reverse = "wfe_test_plugin:ReverseTask"'
CLASHING_ENTRY_POINT = 'echo = "wfe_test_plugin:ShadowEchoTask"'
CHATTY_ENTRY_POINT = 'chatty = "wfe_test_plugin:ChattyTask"'
BAD_SCHEMA_ENTRY_POINT = 'bad_schema = "wfe_test_plugin:BadSchemaTask"'
NAME = 'name = "wfe-test-plugin"'
TWIN_NAME = 'name = "wfe-test-plugin-twin"'

Install = Callable[[str], Path]


def _pip_install(source: Path, target: Path) -> None:
    """Build and install ``source`` into ``target`` with pip, offline."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Install a variant of the plugin once per module; return its site folder.

    ``install("plain")`` is the package as shipped; ``install("clash")`` also registers
    ``echo``, a type the built-ins already define; ``install("chatty")`` also registers
    ``chatty`` (it logs through ``logging`` and asyncio); ``install("bad_schema")`` also
    registers ``bad_schema``, whose params schema is invalid; ``install("twin")`` is the same
    code published as another distribution, ``wfe-test-plugin-twin``.
    """
    installed: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in installed:
            root = tmp_path_factory.mktemp(f"plugin-{variant}")
            source = root / "src"
            # Build from a copy: pip builds in place and would litter tests/plugin_pkg.
            shutil.copytree(PLUGIN_PKG, source)
            pyproject = source / "pyproject.toml"
            text = pyproject.read_text()
            assert ENTRY_POINT in text and NAME in text
            if variant == "clash":
                text = text.replace(ENTRY_POINT, f"{ENTRY_POINT}\n{CLASHING_ENTRY_POINT}")
            elif variant == "chatty":
                text = text.replace(ENTRY_POINT, f"{ENTRY_POINT}\n{CHATTY_ENTRY_POINT}")
            elif variant == "bad_schema":
                text = text.replace(ENTRY_POINT, f"{ENTRY_POINT}\n{BAD_SCHEMA_ENTRY_POINT}")
            elif variant == "twin":
                text = text.replace(NAME, TWIN_NAME)
            pyproject.write_text(text)
            _pip_install(source, root / "site")
            installed[variant] = root / "site"
        return installed[variant]

    return get


def test_installed_plugin_is_listed(run_cli: Callable[..., Any], install: Install) -> None:
    """``tasks --json`` lists the plugin's type beside the built-ins."""
    result = run_cli("tasks", "--json", env={"PYTHONPATH": str(install("plain"))})
    assert result.returncode == 0, result.stderr
    types = {task["type"]: task for task in json.loads(result.stdout)}
    assert types["reverse"]["description"] == "Returns `text` reversed."
    assert {"echo", "sleep", "reverse"} <= set(types)


def test_workflow_runs_a_plugin_task(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path], install: Install
) -> None:
    """A workflow using the plugin's type runs to SUCCESS, its output feeding the next node."""
    path = write_workflow(
        {
            "name": "plugin",
            "nodes": [
                {"id": "flip", "type": "reverse", "params": {"text": "stressed"}},
                {
                    "id": "show",
                    "type": "echo",
                    "depends_on": ["flip"],
                    "params": {"word": "{{ flip.text }}"},
                },
            ],
        }
    )
    result = run_cli("execute", path, env={"PYTHONPATH": str(install("plain"))})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "SUCCESS"
    assert summary["nodes"]["flip"]["output"] == {"text": "desserts"}
    assert summary["nodes"]["show"]["output"] == {"word": "desserts"}


def test_a_plugins_stdlib_logs_are_json_lines_with_secrets_masked(
    run_cli: Callable[..., Any],
    write_workflow: Callable[..., Path],
    install: Install,
    tmp_path: Path,
) -> None:
    """A plugin task logging a secret through ``logging`` (at a custom level, and with
    arguments its format does not fit), and raising it in a loop callback (which asyncio
    reports), gives JSON lines on stderr with the secret masked, and nothing else."""
    secret = "pl4gin-s3cret-value"
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "pw").write_text(secret)
    doc = {
        "name": "chatty",
        "nodes": [{"id": "c", "type": "chatty", "params": {"text": "{{ secrets.pw }}"}}],
    }
    env = {"PYTHONPATH": str(install("chatty")), "WFE_SECRETS_DIR": str(secrets_dir)}
    result = run_cli("execute", write_workflow(doc), env=env)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stderr + result.stdout
    events = [json.loads(line) for line in result.stderr.splitlines()]
    plugin = [e for e in events if e.get("logger") == "wfe_test_plugin"]
    assert [(e["event"], e["level"], e.get("args")) for e in plugin] == [
        ("connecting with ***", "warning", None),
        ("notice ***", "warning", None),
        ("retry %d", "error", "('***',)"),
    ]
    [reported] = [e for e in events if e.get("logger") == "asyncio"]
    assert reported["level"] == "error"
    assert "ValueError: refused ***" in reported["exception"]


def test_plugin_type_unknown_without_the_plugin(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """Without the plugin installed, the same workflow is rejected: nothing leaks in."""
    path = write_workflow(
        {
            "name": "plugin",
            "nodes": [
                {"id": "flip", "type": "reverse", "params": {"text": "stressed"}},
            ],
        }
    )
    result = run_cli("execute", path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["status"] == "REJECTED"


def test_plugin_clashing_with_a_builtin_is_refused(
    run_cli: Callable[..., Any], install: Install
) -> None:
    """A plugin type named like a built-in stops the CLI: exit 2, one line naming both."""
    result = run_cli("tasks", "--json", env={"PYTHONPATH": str(install("clash"))})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "wfe-daemon: task type 'echo' is defined twice: built-in and plugin"
        " wfe_test_plugin:ShadowEchoTask (distribution wfe-test-plugin 0.1.0)\n"
    )


def test_plugin_with_an_invalid_params_schema_is_refused(
    run_cli: Callable[..., Any], install: Install
) -> None:
    """A plugin whose ``params_schema`` is not a valid JSON Schema stops the CLI: exit 2,
    one line naming the plugin, its type and what is wrong."""
    result = run_cli("tasks", "--json", env={"PYTHONPATH": str(install("bad_schema"))})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "wfe-daemon: plugin wfe_test_plugin:BadSchemaTask (distribution wfe-test-plugin"
        " 0.1.0): params_schema of 'bad_schema': 'two' is not of type 'integer'\n"
    )


def test_two_distributions_defining_one_type_are_both_named(
    run_cli: Callable[..., Any], install: Install
) -> None:
    """Two installed distributions with the same entry point: the one line names both
    distributions, not the same entry point twice."""
    path = f"{install('plain')}:{install('twin')}"

    result = run_cli("tasks", env={"PYTHONPATH": path})

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "wfe-daemon: task type 'reverse' is defined twice:"
        " plugin wfe_test_plugin:ReverseTask (distribution wfe-test-plugin 0.1.0) and"
        " plugin wfe_test_plugin:ReverseTask (distribution wfe-test-plugin-twin 0.1.0)\n"
    )


def test_the_daemon_refuses_to_start_on_a_duplicate_type(
    daemons: Daemons, install: Install
) -> None:
    """``run`` stops at start with the same one line naming both distributions, exit 2."""
    daemon = daemons.spawn(PYTHONPATH=f"{install('twin')}:{install('plain')}")

    assert daemon.wait_exit() == 2
    assert daemon.stderr() == (
        "wfe-daemon: task type 'reverse' is defined twice:"
        " plugin wfe_test_plugin:ReverseTask (distribution wfe-test-plugin-twin 0.1.0) and"
        " plugin wfe_test_plugin:ReverseTask (distribution wfe-test-plugin 0.1.0)\n"
    )


def test_a_plugin_installed_while_the_daemon_runs_is_seen_after_a_restart(
    daemons: Daemons, install: Install, tmp_path: Path
) -> None:
    """The daemon looks plugins up at start: a file using a type installed meanwhile is
    REJECTED as unknown until the daemon is restarted, then the same file runs."""
    site = tmp_path / "site"
    site.mkdir()
    doc = {"name": "late", "nodes": [{"id": "flip", "type": "reverse", "params": {"text": "ab"}}]}
    first = daemons.start(PYTHONPATH=str(site))
    shutil.copytree(install("plain"), site, dirs_exist_ok=True)  # as pip install would

    drop(daemons.inbox, "before.json", doc)
    before = wait_result(daemons.outbox, "before")
    assert first.terminate() == 0
    daemons.start(PYTHONPATH=str(site))
    drop(daemons.inbox, "after.json", doc)
    after = wait_result(daemons.outbox, "after")

    assert before["status"] == "REJECTED"
    assert before["errors"] == ["node 'flip': unknown type 'reverse'"]
    assert after["status"] == "SUCCESS"
    assert after["nodes"]["flip"]["output"] == {"text": "ba"}


# -- the plugin API: what a plugin imports ---------------------------------------------------

README = Path(__file__).parent.parent / "README.md"


def _readme_example() -> str:
    """The Python block of the README's "Your own task types"."""
    section = README.read_text(encoding="utf-8").split("### Your own task types", 1)[1]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


def _own_imports(source: str) -> list[str]:
    """What ``source`` imports from wfe-daemon, as ``module:name`` (``module`` for a plain
    import)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wfe_daemon"):
            found.extend(f"{node.module}:{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("wfe_daemon"))
    return found


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(_readme_example(), id="README"),
        pytest.param((PLUGIN_PKG / "wfe_test_plugin" / "__init__.py").read_text(), id="plugin_pkg"),
    ],
)
def test_plugins_import_only_the_package_api(source: str) -> None:
    """The README's example and the test plugin import from ``wfe_daemon`` itself, and only
    names its ``__all__`` exports."""
    imported = _own_imports(source)
    assert imported
    for item in imported:
        module, _, name = item.partition(":")
        assert module == "wfe_daemon", f"{item}: import it from wfe_daemon"
        assert name in wfe_daemon.__all__, f"{name} is not in wfe_daemon.__all__"


async def test_the_readme_example_is_a_task_that_runs(tmp_path: Path) -> None:
    """The README's example class satisfies ``Task``, reverses its text and fails with
    ``TaskFailed`` on an empty one."""
    namespace: dict[str, Any] = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    task = namespace["ReverseTask"]()
    assert isinstance(task, wfe_daemon.Task)
    ctx = wfe_daemon.TaskContext(1, "w", "n", 1, Settings(data_dir=tmp_path), wfe_daemon.Services())
    assert await task.execute({"text": "abc"}, ctx) == {"text": "cba"}
    with pytest.raises(wfe_daemon.TaskFailed, match="nothing to reverse"):
        await task.execute({"text": ""}, ctx)


def test_the_package_api_is_exported_and_imported_on_first_use() -> None:
    """``wfe_daemon`` exports the plugin API, and importing it alone loads none of it."""
    assert sorted(wfe_daemon.__all__) == [
        "Output",
        "Params",
        "Services",
        "Task",
        "TaskContext",
        "TaskFailed",
        "__version__",
    ]
    code = (
        "import sys, wfe_daemon\n"
        "assert 'wfe_daemon.runtime.task' not in sys.modules, sorted(sys.modules)\n"
        "assert 'asyncio' not in sys.modules\n"
        "from wfe_daemon import Task, TaskContext\n"
        "assert TaskContext.__module__ == 'wfe_daemon.runtime.task'\n"
        "try:\n"
        "    wfe_daemon.Nothing\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout == "module 'wfe_daemon' has no attribute 'Nothing'\n"


@pytest.mark.timeout(10)
def test_services_still_read_as_a_mapping() -> None:
    """A plugin written against ``ctx.services["http"]`` / ``.get("http")`` keeps working."""
    from wfe_daemon import Services

    client = object()
    services = Services(http=client)  # type: ignore[arg-type]
    assert services["http"] is client and services.get("http") is client
    assert Services().get("http") is None and Services().get("nope", 1) == 1
    with pytest.raises(KeyError):
        Services()["http"]
