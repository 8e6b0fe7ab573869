"""Podman for the deployment test: its own storage and settings, a cached base image, the
project's image built from a wheelhouse, and the compose deployment.

Everything podman stores for the test lives under :data:`CACHE` (``$WFE_CONTAINER_CACHE``,
else ``$XDG_CACHE_HOME/wfe-daemon/containers``, else ``~/.cache/wfe-daemon/containers``):
``storage/`` (images, containers, volumes), ``networks/``, ``containers.conf`` and
``storage.conf`` (given to podman through ``CONTAINERS_CONF`` and
``CONTAINERS_STORAGE_CONF``, so the host's own podman settings and images are neither
used nor touched). Its run-time state is under ``$XDG_RUNTIME_DIR`` (else ``/run``)
``/wfe-daemon-tests``, cleared at boot as podman expects.

The base image (Debian bookworm with python3, made with ``debootstrap`` and ``podman
import``: no registry is reached) is kept there between runs. Its tag is a hash of its
recipe (:data:`BASE_RECIPE`), so a changed recipe builds a new one; an image older than
:data:`BASE_MAX_AGE_DAYS` is built again (security updates), and so is one that storage
lost. Older base images are removed. A lock file keeps two runs from building it at once.

Every command runs in a session of its own and is stopped by its process group when it
overruns its timeout or the test is interrupted: SIGTERM first (debootstrap unmounts what it
mounted), SIGKILL after :data:`KILL_AFTER_S`. Nothing it started outlives it. What a run
killed before its cleanup left (containers, volumes, networks and images named after its
pid, a half-made root file system) the next run removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
CACHE = (
    Path(os.environ["WFE_CONTAINER_CACHE"])
    if os.environ.get("WFE_CONTAINER_CACHE")
    else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "wfe-daemon"
    / "containers"
)
RUN_DIR = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "wfe-daemon-tests"
BASE_REPO = "localhost/wfe-test-base"
BASE_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-venv"],
    "mirror": os.environ.get("WFE_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
}
BASE_MAX_AGE_DAYS = 30
TOOLS = ("podman", "runc", "debootstrap", "netavark", "aardvark-dns", "iptables")
SOURCE_SKIPPED = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "data")
NICE = ("nice", "-n", "10")
"""The heavy steps yield to other work on the machine."""
KILL_AFTER_S = 10.0
"""How long a stopped command gets to clean up after SIGTERM before SIGKILL."""
PROJECT_PREFIX = "wfetest"
"""The compose projects of the test: this prefix and the pid of the test's process."""
IMAGE_REPO = "localhost/wfe-daemon"
"""The test's images: ``IMAGE_REPO:test-PID``."""


class CommandFailed(AssertionError):
    """Raised when a command exits non-zero or overruns its timeout (with its output)."""


def missing_tools() -> list[str]:
    """The tools the test needs that are missing (netavark and aardvark-dns are podman's,
    iptables is netavark's)."""
    helpers = (Path("/usr/lib/podman"), Path("/usr/libexec/podman"), Path("/usr/sbin"))
    return [
        name
        for name in TOOLS
        if not shutil.which(name) and not any((folder / name).exists() for folder in helpers)
    ]


def environment(**extra: str) -> dict[str, str]:
    """The environment of every podman command: the test's own settings and storage."""
    CACHE.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    conf = (HERE / "containers.conf").read_text(encoding="utf-8")
    tmp_dir = json.dumps(str(RUN_DIR / "libpod"))
    conf = conf.replace("[engine]\n", f"[engine]\ntmp_dir = {tmp_dir}\n", 1)
    networks = json.dumps(str(CACHE / "networks"))
    conf = conf.replace("[network]\n", f"[network]\nnetwork_config_dir = {networks}\n", 1)
    _write_if_changed(CACHE / "containers.conf", conf)
    storage = (
        "# The deployment test's own storage (tests/containers/podman_env.py writes this).\n"
        "[storage]\n"
        'driver = "overlay"\n'
        f"graphroot = {json.dumps(str(CACHE / 'storage'))}\n"
        f"runroot = {json.dumps(str(RUN_DIR / 'storage'))}\n"
    )
    _write_if_changed(CACHE / "storage.conf", storage)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WFE_", "CONTAINERS_"))}
    env.update(
        CONTAINERS_CONF=str(CACHE / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(CACHE / "storage.conf"),
        **extra,
    )
    return env


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds it."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def run(
    args: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    stdin: int | None = subprocess.DEVNULL,
    stdin_from: subprocess.Popen[bytes] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in a session of its own; its whole process group is killed on timeout.

    Raises:
        CommandFailed: it exited non-zero (when ``check``) or overran ``timeout``.
    """
    proc = subprocess.Popen(
        [str(arg) for arg in args],
        stdin=stdin_from.stdout if stdin_from is not None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else environment(),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        _kill_group(proc)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise CommandFailed(f"{_show(args)} overran {timeout}s") from exc
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and done.returncode != 0:
        raise CommandFailed(f"{_show(args)} exited {done.returncode}\n{out[-3000:]}\n{err[-3000:]}")
    return done


def _kill_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after :data:`KILL_AFTER_S`,
    then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_AFTER_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _show(args: Sequence[str | Path]) -> str:
    """A command line to name in an error."""
    return " ".join(str(arg) for arg in args)


def podman(*args: str | Path, timeout: float = 60, check: bool = True) -> str:
    """Run ``podman ARGS`` in the test's storage; its standard output."""
    return run(["podman", *args], timeout=timeout, check=check).stdout


# -- the base image ---------------------------------------------------------------------


def base_image() -> str:
    """The cached base image's name, built first when missing or stale (see the module)."""
    digest = hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()
    name = f"{BASE_REPO}:{digest[:16]}"
    with _locked(CACHE / "base.lock"):
        if not _fresh(name):
            _build_base(name)
        _remove_other_bases(name)
    return name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (another run of the test waits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fresh(name: str) -> bool:
    """Whether ``name`` is stored and younger than :data:`BASE_MAX_AGE_DAYS`."""
    found = run(
        ["podman", "image", "inspect", "--format", "{{.Created}}", name], timeout=30, check=False
    )
    if found.returncode != 0:
        return False
    created = datetime.fromisoformat(found.stdout.strip().split(" +")[0].split(".")[0])
    return datetime.now(UTC) - created.replace(tzinfo=UTC) < timedelta(days=BASE_MAX_AGE_DAYS)


def _build_base(name: str) -> None:
    """debootstrap the recipe's Debian into a folder and import it as ``name``."""
    for leftover in CACHE.glob("rootfs.*"):  # of a run killed while it held the lock
        _remove_rootfs(leftover)
    work = Path(tempfile.mkdtemp(dir=CACHE, prefix="rootfs."))
    try:
        rootfs = work / "rootfs"
        run(
            [
                *NICE,
                "debootstrap",
                f"--variant={BASE_RECIPE['variant']}",
                "--include=" + ",".join(BASE_RECIPE["include"]),
                *(BASE_RECIPE["suite"], rootfs, BASE_RECIPE["mirror"]),
            ],
            timeout=420,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        # The downloaded packages and indexes are of no use in the image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE, start_new_session=True
        )
        try:
            run(["podman", "import", "-", name], timeout=180, stdin_from=tar)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            _kill_group(tar)
    finally:
        _remove_rootfs(work)


def _remove_rootfs(folder: Path) -> None:
    """Unmount what a stopped debootstrap left mounted in ``folder`` (its /proc, /sys),
    then remove it; never remove files through a mount.

    Raises:
        CommandFailed: something under ``folder`` is still mounted.
    """
    for mount in sorted(_mounts_under(folder), key=len, reverse=True):
        run(["umount", "--lazy", mount], timeout=30, check=False, env=os.environ)
    if still := _mounts_under(folder):
        raise CommandFailed(f"still mounted, {folder} is left in place: {', '.join(still)}")
    shutil.rmtree(folder, ignore_errors=True)


def _mounts_under(folder: Path) -> list[str]:
    """The mount points at or below ``folder`` (from /proc/self/mountinfo)."""
    top = str(folder.resolve())
    lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    # The fifth field, with spaces and the like escaped as octal (\040).
    points = [line.split()[4].encode().decode("unicode_escape") for line in lines]
    return [point for point in points if point == top or point.startswith(top + "/")]


def _remove_other_bases(keep: str) -> None:
    """Remove base images of other recipes (or stale ones) from the test's storage."""
    names = podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPO).split()
    for other in names:
        if other != keep:
            podman("rmi", "--force", other, check=False)


# -- the project's image ----------------------------------------------------------------


def build_wheelhouse(folder: Path, *projects: Path) -> Path:
    """``pip wheel`` the checkout with its ``dask`` extra, and ``projects``, into ``folder``.

    The checkout is copied first (without its virtual environment, caches and ``build/``),
    so no file left in an old ``build/`` folder slips into the wheel.
    """
    source = folder.parent / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SOURCE_SKIPPED))
    run(
        [
            *NICE,
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "-w",
            folder,
            f"{source}[dask]",
            *projects,
        ],
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    shutil.rmtree(source)
    return folder


def build_image(name: str, base: str, wheelhouse: Path, extra_packages: str = "") -> None:
    """``podman build`` deploy/Containerfile on ``base`` with ``wheelhouse`` as context,
    installing ``extra_packages`` of the wheelhouse too."""
    run(
        [
            *NICE,
            *["podman", "build", "--isolation=chroot", "--format=docker"],
            *(
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--build-arg",
                f"EXTRA_PACKAGES={extra_packages}",
            ),
            *("--file", CONTAINERFILE, "--tag", name),
            wheelhouse,
        ],
        timeout=420,
    )


def remove_leftovers() -> None:
    """Remove the deployments and images of runs of the test whose process is gone (killed
    before its cleanup: SIGKILL, a CI job cancelled)."""
    found = podman(
        "ps", "--all", "--format", '{{ index .Labels "io.podman.compose.project" }}', check=False
    )
    for project in set(found.split()):
        if project.startswith(PROJECT_PREFIX) and _gone(project.removeprefix(PROJECT_PREFIX)):
            remove_project(project)
    images = podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO, check=False)
    for image in images.split():
        if image.startswith(f"{IMAGE_REPO}:test-") and _gone(image.rpartition("-")[2]):
            remove_image(image)


def _gone(pid: str) -> bool:
    """Whether ``pid`` names no running process."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_project(project: str) -> None:
    """Remove every container, pod, volume and network of compose project ``project``."""
    label = f"label=io.podman.compose.project={project}"
    for kind in ("container", "volume", "network"):
        listing = "ps" if kind == "container" else "ls"
        extra = ["--all"] if kind == "container" else []
        found = podman(kind, listing, *extra, "--quiet", "--filter", label, check=False)
        for ident in found.split():
            podman(kind, "rm", "--force", ident, check=False)
        if kind == "container":
            podman("pod", "rm", "--force", "--ignore", f"pod_{project}", check=False)


def remove_image(name: str) -> None:
    """Remove ``name`` and the build's intermediate images; the base image stays."""
    podman("rmi", "--force", name, check=False)
    podman("image", "prune", "--force", check=False)


# -- the compose deployment -------------------------------------------------------------


class Deployment:
    """``podman-compose`` of deploy/compose.yaml as project ``project``, with ``env``."""

    def __init__(self, project: str, env: Mapping[str, str]) -> None:
        self.project = project
        self.env = environment(**env)

    def compose(self, *args: str, timeout: float = 120) -> str:
        """Run ``podman-compose -f deploy/compose.yaml -p PROJECT ARGS``; its output."""
        program = Path(sys.executable).parent / "podman-compose"
        command = [program, "-f", COMPOSE_FILE, "-p", self.project, *args]
        return run(command, timeout=timeout, env=self.env).stdout

    def container(self, service: str) -> str:
        """The container name podman-compose gives ``service``."""
        return f"{self.project}_{service}_1"

    def logs(self, service: str) -> str:
        """All that ``service`` wrote to stdout and stderr."""
        done = run(["podman", "logs", self.container(service)], timeout=30, check=False)
        return done.stdout + done.stderr

    def inspect(self, service: str) -> dict[str, Any]:
        """``podman inspect`` of ``service``'s container."""
        found: list[dict[str, Any]] = json.loads(podman("inspect", self.container(service)))
        return found[0]

    def remove(self) -> None:
        """Remove every container, volume and network of the project, whatever happened."""
        with contextlib.suppress(CommandFailed):
            self.compose("down", "--volumes", "--timeout", "5", timeout=180)
        remove_project(self.project)
