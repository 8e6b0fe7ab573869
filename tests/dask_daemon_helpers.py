"""Helpers of the Dask daemon tests: a daemon's settings for a test cluster, workflows,
and what runs on the workers now."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from daemon_helpers import wait_until
from dask_cluster import DaskCluster
from wfe_daemon.cluster import worker

SECRET = "s3cr3t-value"
"""The value of the secret ``token`` in :func:`secrets_dir`."""


def secrets_dir(root: Path) -> Path:
    """A folder ``root / "secrets"`` holding the secret ``token`` (:data:`SECRET`), for
    ``WFE_SECRETS_DIR``."""
    folder = root / "secrets"
    folder.mkdir()
    (folder / "token").write_text(SECRET + "\n")
    return folder


def dask_env(cluster: DaskCluster, remote: str = "sleep,echo", **extra: str) -> dict[str, str]:
    """The daemon's settings for ``cluster``: its address (and TLS files), the remote types."""
    env = {
        "WFE_EXECUTOR": "dask",
        "WFE_DASK_SCHEDULER": cluster.address,
        "WFE_REMOTE_TYPES": remote,
    }
    if cluster.tls is not None:
        env.update(
            WFE_DASK_TLS_CA_FILE=str(cluster.tls.ca_file),
            WFE_DASK_TLS_CERT=str(cluster.tls.cert),
            WFE_DASK_TLS_KEY=str(cluster.tls.key),
        )
    return {**env, **extra}


def mixed_workflow(name: str = "mixed", seconds: float = 0.2) -> dict[str, Any]:
    """``a`` (echo, local) -> ``b`` (sleep, remote, its seconds from ``a``) -> ``c`` (echo,
    local, quoting ``b``'s output)."""
    return {
        "name": name,
        "nodes": [
            {"id": "a", "type": "echo", "params": {"wait": seconds, "word": "hi"}},
            {
                "id": "b",
                "type": "sleep",
                "depends_on": ["a"],
                "params": {"seconds": "{{ a.wait }}"},
            },
            {
                "id": "c",
                "type": "echo",
                "depends_on": ["b"],
                "params": {"slept": "{{ b.slept }}", "text": "{{ a.word }} after {{ b.slept }}s"},
            },
        ],
    }


def outputs(summary: dict[str, Any]) -> dict[str, Any]:
    """Each node's status and output."""
    return {k: (n["status"], n.get("output")) for k, n in summary["nodes"].items()}


def running_on(cluster: DaskCluster) -> dict[str, list[str]]:
    """The attempts running on each worker now, by worker address."""
    with cluster.client() as client:
        return {a: info["running"] for a, info in client.run(worker.describe).items()}


def remote_events(daemon: Any) -> list[dict[str, Any]]:
    """The daemon's ``cluster.attempt`` log lines."""
    return list(daemon.events("cluster.attempt"))


def sleeper(name: str, seconds: float, **node: Any) -> dict[str, Any]:
    """One remote ``sleep`` node ``s`` (with ``node``'s extra fields)."""
    return {
        "name": name,
        "nodes": [{"id": "s", "type": "sleep", "params": {"seconds": seconds}, **node}],
    }


def wait_free(cluster: DaskCluster, keys: set[str] | None = None) -> None:
    """Wait until no attempt (of ``keys``, default any) runs on the cluster's workers."""

    def free() -> bool:
        running = {key for found in running_on(cluster).values() for key in found}
        return not (running & keys if keys is not None else running)

    wait_until(free, 10, "the workers to be free")


def attempts_running(cluster: DaskCluster, count: int) -> set[str]:
    """Wait until ``count`` attempts run on the workers; their keys."""

    def found() -> set[str] | None:
        keys = {key for found in running_on(cluster).values() for key in found}
        return keys if len(keys) >= count else None

    return wait_until(found, 20, f"{count} attempts running on the workers")


def worker_of(keys: set[str], cluster: DaskCluster, names: tuple[str, ...]) -> str:
    """The name of the worker running one of ``keys``."""
    running = running_on(cluster)
    for name in names:
        if set(running.get(cluster.worker_address(name), ())) & keys:
            return name
    raise AssertionError(f"no worker of {names} runs {keys}: {running}")


_PLUGIN = '''"""A task plugin of the Dask executor's tests (written by them)."""

{imports}
from typing import Any, ClassVar


class {name}:
    """{doc}"""

    type: ClassVar[str] = "{type}"
    display_name: ClassVar[str] = "{title}"
    description: ClassVar[str] = {description}
    category: ClassVar[str] = "test"
    params_schema: ClassVar[dict[str, Any]] = {{"type": "object"}}
    default_timeout: ClassVar[float | None] = None

    async def execute(self, params, ctx):
{body}
'''


def plugin_folder(folder: Path, task_type: str, doc: str, execute: str, imports: str = "") -> Path:
    """``folder`` holding task type ``task_type`` as an installed distribution: module
    ``wfe_<type>_plugin`` with class ``<Type>Task`` (docstring ``doc``, ``execute``'s body
    ``execute``, after ``imports``), and a ``*.dist-info`` whose ``entry_points.txt``
    names it (what ``importlib.metadata`` finds on ``PYTHONPATH``)."""
    module, name = f"wfe_{task_type}_plugin", f"{task_type.title()}Task"
    info = folder / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    body = textwrap.indent(textwrap.dedent(execute).strip(), " " * 8)
    source = _PLUGIN.format(
        imports=imports,
        name=name,
        doc=doc,
        description=repr(doc),
        type=task_type,
        title=task_type.title(),
        body=body,
    )
    (folder / f"{module}.py").write_text(source)
    dist = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[wfe_daemon.tasks]\n{task_type} = {module}:{name}\n")
    return folder


_GATE = """
gate = pathlib.Path(params["gate"])
while not gate.exists():
    await asyncio.sleep(0.02)
return {"opened": True}
"""


def gate_plugin(root: Path) -> Path:
    """A folder (in ``root``) holding the ``gate`` task as a distribution: its attempt runs
    until the file ``params["gate"]`` exists, so a test decides when it ends (put the folder
    on ``PYTHONPATH`` of the daemon and the workers)."""
    doc = 'Waits until the file ``params["gate"]`` exists.'
    return plugin_folder(root / "gate-plugin", "gate", doc, _GATE, "import asyncio\nimport pathlib")


def gated(name: str, gate: Path, *ids: str, **node: Any) -> dict[str, Any]:
    """A workflow of independent ``gate`` nodes ``ids`` (default one, ``s``), waiting for
    the file ``gate`` (with ``node``'s extra fields)."""
    params = {"gate": str(gate)}
    nodes = [{"id": i, "type": "gate", "params": params, **node} for i in ids or ("s",)]
    return {"name": name, "nodes": nodes}
