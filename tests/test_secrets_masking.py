"""Learning a secret to mask: a value whose pattern is awkward to build (lines that
extend each other, a long line) is still masked, and a value too large is refused, by a
real daemon reading real secret files."""

from __future__ import annotations

import json
import sys

from daemon_helpers import Daemons, drop, wait_result
from wfe_daemon.core.masking import LONG_PIECE, Masker, MaskingFailed
from wfe_daemon.runtime.secrets import MAX_SECRET_BYTES

STAIRS = "\n".join("a" * width for width in range(4, 1501))
"""A key-like file of lines ``aaaa``, ``aaaaa``... each a prefix of the next."""


def echo_secret(name: str) -> dict[str, object]:
    """A run that echoes the secret ``name`` and retries once at once on failure."""
    node = {"id": "show", "type": "echo", "retries": 1, "retry_delay": 0}
    return {"name": name, "nodes": [{**node, "params": {"v": f"{{{{ secrets.{name} }}}}"}}]}


def test_a_key_file_too_large_to_mask_is_never_served(daemons: Daemons) -> None:
    """A secret of 1,497 lines, each a prefix of the next (1.1 MB), fails its node on
    every attempt saying why, and its value shows nowhere: not in the outbox, not in the
    logs, not through a retry."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "stairs").write_text(STAIRS + "\n")
    daemon = daemons.start(WFE_SECRETS_DIR=str(secrets_dir))
    drop(daemons.inbox, "stairs.json", echo_secret("stairs"))
    show = wait_result(daemons.outbox, "stairs")["nodes"]["show"]
    assert (show["status"], show["attempts"]) == ("FAILED", 2)
    assert show["error"] == (
        f"secret 'stairs': {secrets_dir / 'stairs'} is larger than 65536 bytes"
    )
    written = "".join(p.read_text() for p in daemons.outbox.glob("*.json"))
    assert "a" * 40 not in written
    assert daemon.terminate() == 0
    assert "a" * 40 not in daemon.output()


def test_a_secret_over_the_limit_fails_its_node_saying_so(daemons: Daemons) -> None:
    """A secret file of 64 KiB and one byte fails the node that reads it, naming the file
    and the limit; one of exactly 64 KiB (a single line) is used, masked."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "big").write_text("b" * MAX_SECRET_BYTES + "c")
    (secrets_dir / "fits").write_text("f" * (MAX_SECRET_BYTES - 2) + "g\n")
    daemons.start(WFE_SECRETS_DIR=str(secrets_dir))
    drop(daemons.inbox, "big.json", echo_secret("big"))
    drop(daemons.inbox, "fits.json", echo_secret("fits"))
    big = wait_result(daemons.outbox, "big")
    assert big["nodes"]["show"]["status"] == "FAILED"
    assert big["nodes"]["show"]["error"] == (
        f"secret 'big': {secrets_dir / 'big'} is larger than 65536 bytes"
    )
    fits = wait_result(daemons.outbox, "fits")
    assert fits["status"] == "SUCCESS", fits["nodes"]["show"].get("error")
    assert fits["nodes"]["show"]["output"] == {"v": "***"}


def test_the_masker_learns_awkward_values_without_losing_any() -> None:
    """Lines that extend each other, a line past the long-piece threshold and short
    secrets learned after them are all masked, each in its own pattern: the longest
    occurrence wins, and overlapping values of two secrets are masked as one."""
    masker = Masker()
    assert masker.learn(STAIRS)
    assert masker.text(f"x {'a' * 1500} y {'a' * 7}.") == "x *** y ***."
    long = "L" * (LONG_PIECE + 10)
    assert masker.learn(long)
    assert masker.text(f"<{long}>") == "<***>"
    assert masker.learn("zzzzbbbb")
    assert masker.learn("bbbbcccc")
    assert masker.text("-zzzzbbbbcccc-") == "-***-"
    assert masker.json_text(json.dumps({"k": f"{'a' * 9}:zzzzbbbb"})) == '{"k": "***:***"}'
    masker.forget(["zzzzbbbb"])
    assert masker.text("zzzzbbbb bbbbcccc") == "zzzzbbbb ***"


def frames() -> int:
    """How many frames the stack holds here."""
    frame, count = sys._getframe(), 0
    while frame is not None:
        frame, count = frame.f_back, count + 1  # type: ignore[assignment]
    return count


def test_a_value_whose_pattern_fails_is_learned_again_in_full() -> None:
    """When building a value's pattern fails (here: the stack runs out while the regular
    expression is compiled), learning raises and keeps nothing, so the next read learns
    the value in full and it is masked: never a value read but not masked."""
    masker = Masker()
    value = "-----BEGIN-----\nline-one-abcdef\nline-two-abcdef\n-----END-----"
    limit, failed = sys.getrecursionlimit(), 0
    try:
        for room in range(1, 400):  # ever more stack, until learning succeeds
            try:
                sys.setrecursionlimit(frames() + room)
                masker.learn(value)
            except MaskingFailed:
                failed += 1
            except RecursionError:
                pass  # a limit below the depth here, or out of stack before the build
            else:
                break
    finally:
        sys.setrecursionlimit(limit)
    assert failed
    assert masker.text(f"x {value} line-two-abcdef") == "x *** ***"


def test_a_long_line_is_masked_as_written_only() -> None:
    """Above the long-piece threshold only the raw form is masked; below it the quoted
    forms are too."""
    masker = Masker()
    long = "q'" * LONG_PIECE
    short = "w'" * 10
    masker.learn(long)
    masker.learn(short)
    assert masker.text(long) == "***"
    assert masker.text(repr(short)[1:-1]) == "***"
