"""glibc's mmap threshold stays fixed in the daemon, so large blocks go back to the system.

glibc's default raises the threshold to the size of each large block freed; from then on
blocks up to that size come from the heap, whose free lists the process keeps. Each case
runs in a fresh interpreter: the threshold is process-wide, and the test process's own
allocator history must not decide the outcome.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daemon_helpers import drop, echo_doc

#: Frees a block of ``freed`` bytes, then prints how many bytes glibc maps on their own
#: (``mallinfo2().hblkhd``) for a new block of ``asked`` bytes; "not glibc" elsewhere.
_MAPPED_AFTER_FREE = textwrap.dedent(
    """
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    def mapped_after_free(freed: int, asked: int) -> str:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return "not glibc"
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = (ctypes.c_size_t,)
        libc.free.argtypes = (ctypes.c_void_p,)
        libc.mallinfo2.restype = Mallinfo2
        libc.free(libc.malloc(freed))
        before = libc.mallinfo2().hblkhd
        block = libc.malloc(asked)
        grown = libc.mallinfo2().hblkhd - before
        libc.free(block)
        return str(grown)
    """
)

_AFTER_FIX = _MAPPED_AFTER_FREE + textwrap.dedent(
    """
    import sys
    from wfe_daemon.service.allocator import fix_mmap_threshold

    fix_mmap_threshold()
    print(mapped_after_free(int(sys.argv[1]), int(sys.argv[2])))
    """
)

#: The real daemon (``wfe-daemon run``) with one extra thread: once the daemon has served a
#: workflow, it runs the experiment in the daemon's own process, writes the answer beside
#: this script, and stops the daemon with SIGTERM.
_IN_THE_DAEMON = _MAPPED_AFTER_FREE + textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from pathlib import Path
    from wfe_daemon.cli.commands import main

    def check() -> None:
        result = Path(os.environ["WFE_OUTBOX"]) / "w.result.json"
        while not result.exists():
            time.sleep(0.02)
        answer = mapped_after_free(900 * 1024, 900 * 1024)
        Path(__file__).with_name("answer").write_text(answer)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=check, daemon=True).start()
    raise SystemExit(main(["run"]))
    """
)


def _answer(text: str) -> int:
    if text.strip() == "not glibc":
        pytest.skip("the C library is not glibc")
    return int(text)


def test_daemon_keeps_a_large_block_mapped_after_freeing_one(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """In the running daemon, a 0.9 MiB block freed does not pull the next one into the heap."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop(inbox, "w.json", echo_doc())
    script = tmp_path / "daemon_probe.py"
    script.write_text(_IN_THE_DAEMON)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=cli_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _answer((tmp_path / "answer").read_text()) >= 900 * 1024


def test_block_just_over_the_threshold_stays_mapped_after_a_huge_one() -> None:
    """With the threshold fixed, a 200 KiB block is mapped even after an 8 MiB one was freed."""
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_FIX, str(8 * 1024 * 1024), str(200 * 1024)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert _answer(done.stdout) >= 200 * 1024
