"""A minimal PEP 517 backend: packs ``wfe_test_plugin/`` and pyproject's metadata into a wheel.

It exists so the plugin tests build offline with nothing but the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).parent
_PACKAGE = "wfe_test_plugin"


def _project() -> dict[str, Any]:
    with (_ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _dist_info(project: dict[str, Any]) -> dict[str, str]:
    groups = project.get("entry-points", {})
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in groups.items()
    )
    metadata = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    wheel = (
        "Wheel-Version: 1.0\nGenerator: build_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    return {"METADATA": metadata, "WHEEL": wheel, "entry_points.txt": entry_points}


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """Write the wheel into ``wheel_directory``; return its file name."""
    project = _project()
    dist = f"{project['name'].replace('-', '_')}-{project['version']}"
    wheel_name = f"{dist}-py3-none-any.whl"
    files = {
        path.relative_to(_ROOT).as_posix(): path.read_bytes()
        for path in sorted((_ROOT / _PACKAGE).rglob("*.py"))
    }
    files.update(
        {f"{dist}.dist-info/{name}": text.encode() for name, text in _dist_info(project).items()}
    )
    record = f"{dist}.dist-info/RECORD"
    lines = [_record_line(name, data) for name, data in files.items()] + [f"{record},,"]
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(record, "\n".join(lines) + "\n")
    return wheel_name


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    """Not needed by the tests: pip builds this package from its folder."""
    raise NotImplementedError("build the wheel instead")
