"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

``DaskCluster(root).start(["w1", "w2"])`` starts a scheduler (port 0, a scheduler file,
no dashboard, ``allowed-failures: 0`` so a worker killed mid-attempt fails the attempt
instead of running it again elsewhere) and one worker per name, preloaded with
``wfe_daemon.cluster.worker``, and returns once every worker is registered. ``stop()``
ends every process by pid (SIGTERM, then SIGKILL after a grace); a finalizer does the
same at interpreter exit, so no process outlives a failing test run.

Workers run without a nanny (``--no-nanny``): the ``dask worker`` process is the one that
runs the attempts, so ``kill_worker`` (SIGKILL of that pid) kills the attempt itself, and
nothing restarts it behind the test's back. Each worker runs in its own folder (so no
``config/wfe.toml`` of the checkout is read) with its own environment: ``module_dir`` on
its ``PYTHONPATH`` (for modules a test writes), ``WFE_DATA_DIR`` set to its folder's
``data``, and whatever ``WFE_*`` or ``PYTHONPATH`` the test adds.

``DaskCluster(root, tls=True)`` makes a temporary CA and certificates with ``trustme``
and starts every process with ``--protocol tls`` and the three files (``tls.ca_file``,
``tls.cert``, ``tls.key``), which the daemon's settings take as they are.

``distributed`` is imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRELOAD = "wfe_daemon.cluster.worker"
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
NTHREADS = 4


@dataclass(frozen=True)
class TlsFiles:
    """A temporary CA and one certificate for every process (and the client)."""

    ca_file: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, folder: Path) -> TlsFiles:
        """Write a new CA and a certificate for 127.0.0.1 and localhost into ``folder``."""
        import trustme

        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        files = cls(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
        ca.cert_pem.write_to_path(str(files.ca_file))
        files.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(files.key))
        return files

    def args(self) -> list[str]:
        """The command-line options of ``dask scheduler`` and ``dask worker``."""
        return [
            "--protocol",
            "tls",
            "--tls-ca-file",
            str(self.ca_file),
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
        ]


class ClusterError(RuntimeError):
    """Raised when a process of the cluster does not come up (or go) as expected."""


class DaskCluster:
    """A scheduler and named workers, each a real process, ended by pid."""

    def __init__(self, root: Path, *, tls: bool = False) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.module_dir = root / "modules"
        """On every worker's ``PYTHONPATH``: where a test writes modules workers import."""
        self.module_dir.mkdir(exist_ok=True)
        self.scheduler_file = root / "scheduler.json"
        self.tls = TlsFiles.create(root / "tls") if tls else None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._port: int | None = None
        self._options: dict[str, dict[str, Any]] = {}
        """Each worker's options, by name, for :meth:`restart`."""
        # Reaps every process even if stop() is never called (a crash, an exit).
        self._finalizer = weakref.finalize(self, _reap, self._procs)

    # -- the whole cluster -------------------------------------------------------------

    def start(
        self,
        workers: Iterable[str] | Mapping[str, Mapping[str, Any]] = ("w1", "w2"),
        **worker_options: Any,
    ) -> DaskCluster:
        """Start the scheduler, then the ``workers`` (all at once); wait until registered.

        ``workers`` are names, or each name's own options (as :meth:`start_worker`'s),
        which take precedence over ``worker_options`` (given to all).
        """
        self.start_scheduler()
        chosen = workers if isinstance(workers, Mapping) else {name: {} for name in workers}
        for name, options in chosen.items():
            self._spawn_worker(name, **{**worker_options, **options})
        self.wait_workers(chosen)
        return self

    def stop(self) -> None:
        """End every process: SIGTERM, then SIGKILL after a grace; all reaped."""
        _reap(self._procs)

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The scheduler's address, ``tcp://127.0.0.1:port`` (``tls://`` with TLS)."""
        if self._port is None:
            raise ClusterError("the scheduler has not been started")
        return f"{'tls' if self.tls else 'tcp'}://127.0.0.1:{self._port}"

    def security(self) -> Any:
        """A ``distributed.Security`` for clients of this cluster (``None`` without TLS)."""
        if self.tls is None:
            return None
        from distributed import Security

        return Security(
            tls_ca_file=str(self.tls.ca_file),
            tls_client_cert=str(self.tls.cert),
            tls_client_key=str(self.tls.key),
            require_encryption=True,
        )

    def client(self, **options: Any) -> Any:
        """A new ``distributed.Client`` of this cluster (sync unless ``asynchronous=True``)."""
        from distributed import Client

        return Client(self.address, security=self.security(), timeout="10s", **options)

    def log(self, name: str) -> str:
        """The stderr and stdout of process ``name`` (``scheduler`` or a worker's name)."""
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the scheduler -----------------------------------------------------------------

    def start_scheduler(self) -> None:
        """Start the scheduler (again on its earlier port, after ``stop_scheduler``)."""
        if "scheduler" in self._procs:
            raise ClusterError("the scheduler is already running")
        self.scheduler_file.unlink(missing_ok=True)
        args = [
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port or 0),
            "--scheduler-file",
            str(self.scheduler_file),
            "--no-dashboard",
            *(self.tls.args() if self.tls else []),
        ]
        self._spawn("scheduler", args, {}, self.root)
        _wait(
            self._read_scheduler_file,
            lambda: f"scheduler file {self.scheduler_file}\n{self._logs(['scheduler'])}",
            self._procs["scheduler"],
        )

    def _read_scheduler_file(self) -> bool:
        """Take the port from the scheduler file; whether it is there and whole yet."""
        try:
            address = json.loads(self.scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return False
        self._port = int(address.rsplit(":", 1)[1])
        return True

    def stop_scheduler(self, *, kill: bool = False) -> None:
        """SIGTERM the scheduler (SIGKILL after a grace), or SIGKILL it at once (``kill``),
        and reap it. Workers exit when their scheduler closes; :meth:`restart` brings the
        whole cluster back."""
        proc = self._procs.pop("scheduler")
        if kill:
            os.kill(proc.pid, signal.SIGKILL)
        _end(proc)

    def restart(self) -> None:
        """Stop everything, then start the scheduler on the same address and the workers
        that were started (and not stopped or killed since) with the same options."""
        names = [name for name in self._procs if name != "scheduler"]
        for name in names:
            _end(self._procs.pop(name))
        if "scheduler" in self._procs:
            self.stop_scheduler()
        self.start_scheduler()
        for name in names:
            self._spawn_worker(name, **self._options[name])
        self.wait_workers(names)

    # -- workers -----------------------------------------------------------------------

    def start_worker(self, name: str, **options: Any) -> None:
        """Start worker ``name`` (replacing one of that name) and wait until registered.

        ``options``: ``env`` (extra variables; ``PYTHONPATH`` is put before the others),
        ``preload`` (default ``True``), ``nthreads``.
        """
        if name in self._procs:
            self.stop_worker(name)
        self._spawn_worker(name, **options)
        self.wait_workers([name])

    def stop_worker(self, name: str) -> int:
        """SIGTERM worker ``name`` (SIGKILL after a grace); wait until the scheduler lost it.

        Returns its exit status (``-9`` when it had to be killed).
        """
        status = _end(self._procs.pop(name))
        self._wait_gone(name)
        return status

    def kill_worker(self, name: str) -> None:
        """SIGKILL worker ``name`` (the process running its attempts); wait until the
        scheduler has removed it."""
        proc = self._procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _kill_group(proc.pid)
        self._wait_gone(name)

    def worker_pid(self, name: str) -> int:
        """The pid of worker ``name``."""
        return self._procs[name].pid

    @property
    def scheduler_pid(self) -> int:
        """The pid of the scheduler."""
        return self._procs["scheduler"].pid

    def worker_address(self, name: str) -> str:
        """The address worker ``name`` serves on, as the scheduler knows it."""
        for address, info in self.workers().items():
            if info.get("name") == name:
                return address
        raise ClusterError(f"worker {name!r} is not registered")

    def workers(self) -> dict[str, dict[str, Any]]:
        """The workers the scheduler knows now, by address (a short-lived client asks)."""
        with self.client() as client:
            return dict(client.scheduler_info(n_workers=-1)["workers"])

    def wait_workers(self, names: Iterable[str]) -> None:
        """Wait until every worker of ``names`` is registered with the scheduler."""
        wanted = set(names)
        if not wanted:
            return
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.client() as client:
            while True:
                known = {info.get("name") for info in client.scheduler_info()["workers"].values()}
                if wanted <= known:
                    return
                for name in wanted - known:
                    if self._procs[name].poll() is not None:
                        raise ClusterError(f"worker {name!r} exited\n{self._logs([name])}")
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"workers {sorted(wanted - known)} not registered within"
                        f" {START_TIMEOUT_S:g}s\n{self._logs(['scheduler', *wanted])}"
                    )
                time.sleep(0.05)

    def _wait_gone(self, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.client() as client:
            while any(
                info.get("name") == name for info in client.scheduler_info()["workers"].values()
            ):
                if time.monotonic() > deadline:
                    raise ClusterError(f"the scheduler still lists worker {name!r}")
                time.sleep(0.05)

    def _spawn_worker(
        self,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        preload: bool = True,
        nthreads: int = NTHREADS,
    ) -> None:
        self._options[name] = {"env": env, "preload": preload, "nthreads": nthreads}
        folder = self.root / f"worker-{name}"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        args = [
            "worker",
            self.address,
            "--name",
            name,
            "--nthreads",
            str(nthreads),
            "--host",
            "127.0.0.1",
            "--no-nanny",
            "--no-dashboard",
            "--local-directory",
            str(folder / "dask"),
            *(["--preload", PRELOAD] if preload else []),
            *(self.tls.args() if self.tls else []),
        ]
        variables = {"WFE_DATA_DIR": str(folder / "data"), **(env or {})}
        self._spawn(name, args, variables, folder)

    # -- processes ---------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        variables = {
            key: value for key, value in os.environ.items() if not key.startswith(("WFE_", "DASK_"))
        }
        config_dir = self.root / "dask-config"  # no ~/.config/dask of the machine
        config_dir.mkdir(exist_ok=True)
        paths = [env.get("PYTHONPATH", ""), str(self.module_dir), os.environ.get("PYTHONPATH")]
        variables.update(env)
        variables.update(
            PYTHONPATH=os.pathsep.join(p for p in paths if p),
            DASK_CONFIG=str(config_dir),
            DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0",
        )
        with open(self.root / f"{name}.log", "ab") as log:
            self._procs[name] = subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                cwd=cwd,
                env=variables,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: whatever it starts is ended with it
            )

    def _logs(self, names: Iterable[str]) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name)[-4000:]}" for name in names)


def _wait(ready: Any, what: Any, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise ClusterError(f"exited with status {proc.returncode}: {what()}")
        if time.monotonic() > deadline:
            raise ClusterError(f"not ready within {START_TIMEOUT_S:g}s: {what()}")
        time.sleep(0.05)


def _end(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> int:
    """SIGTERM ``proc``, SIGKILL it after ``grace`` seconds, reap it and its group; its
    exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    _kill_group(proc.pid)
    return proc.returncode


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of the process group ``pid`` led (its own children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _reap(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """End the workers (all at once), then the scheduler: workers leave it cleanly."""
    workers = [procs.pop(name) for name in list(procs) if name != "scheduler"]
    for proc in workers:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S  # one grace for all, not one each
    for proc in workers:
        _end(proc, max(0.0, deadline - time.monotonic()))
    if "scheduler" in procs:
        _end(procs.pop("scheduler"))


@contextlib.contextmanager
def dask_cluster_at(root: Path, **options: Any) -> Iterator[DaskCluster]:
    """A started cluster (``options`` as ``DaskCluster.start``'s, plus ``tls``), stopped on exit."""
    cluster = DaskCluster(root, tls=options.pop("tls", False))
    try:
        yield cluster.start(**options)
    finally:
        cluster.stop()
