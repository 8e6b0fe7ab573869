"""Tests of how ``wfe-daemon submit`` and ``retry --detach`` reach the daemon: straight to
its address (never through a proxy), without loading the server's modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemon_helpers import free_port

TOKEN = "transport-t0ken"


def test_submitting_commands_load_no_server_module(tmp_path: Path) -> None:
    """Reading the token and POSTing (here to an address where nothing listens) imports
    neither the web package nor aiohttp: the commands stay light."""
    port = free_port()
    code = (
        "import sys\n"
        "from wfe_daemon.config import load_settings\n"
        "from wfe_daemon.cli.submitting import retry_detached\n"
        "from wfe_daemon.errors import StoreError\n"
        f"settings = load_settings({{'http_port': {port}}}, {{}}, None)\n"
        "try:\n"
        "    retry_detached(settings, {'WFE_API_TOKEN': 'x'}, 1)\n"
        "except StoreError as exc:\n"
        "    print('refused:', exc, file=sys.stderr)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('aiohttp', 'wfe_daemon.web')))\n"
        "print(' '.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "cannot reach the daemon" in done.stderr
    assert done.stdout.strip() == ""
