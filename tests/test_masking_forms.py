"""Masking a secret in the forms messages and tools give it (``repr()``, JSON-escaped,
percent-encoded), at the edge of a cut error message, and in log lines that must stay
JSON. Each test runs a real daemon and reads every file it wrote."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from daemon_helpers import Daemons, drop, wait_result

SECRET = 'C:\\keys\\t0p "qu0te" zä/+&=9k'
"""A secret every reshaping changes: backslashes, quotes, a space, non-ASCII, ``/+&=``."""
PRINT_FORMS = (
    "import json, os, sys; from urllib.parse import quote, quote_plus; s = os.environ['S'];"
    " print(repr(s)); print(json.dumps(s)); print(json.dumps(s, ensure_ascii=False));"
    " print(quote(s)); print(quote(s, safe='')); print(quote_plus(s))"
)
CUT_STDERR = (
    "import os, sys; s = os.environ['S'];"
    " sys.stderr.write('A' * 500 + s + 'B' * (400 - len(s) // 2 - 3)); sys.exit(3)"
)


def forms(secret: str) -> set[str]:
    """Every form of ``secret`` that must not be written, and each as JSON text holds it."""
    shapes = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return shapes | {json.dumps(shape, ensure_ascii=False)[1:-1] for shape in shapes}


def written_files(root: Path, skip: Path) -> list[Path]:
    """Every regular file under ``root`` but those under ``skip``."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents]


@pytest.mark.timeout(60)
def test_a_secret_reshaped_by_a_tool_is_masked_in_every_form(daemons: Daemons) -> None:
    """A shell node prints the secret as ``repr``, JSON-escaped and
    percent-encoded; another fails with it at the edge of the kept stderr tail: each form
    shows as ``***``, half of it never survives the cut, and no file the daemon wrote
    holds any form."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "key").write_text(SECRET + "\n")
    daemons.start(WFE_SECRETS_DIR=str(secrets_dir), WFE_ENABLE_SHELL="1")
    env = {"S": "{{ secrets.key }}"}
    doc = {
        "name": "forms",
        "nodes": [
            {
                "id": "print",
                "type": "shell",
                "params": {"argv": [sys.executable, "-c", PRINT_FORMS], "env": env},
            },
            {
                "id": "cut",
                "type": "shell",
                "params": {"argv": [sys.executable, "-c", CUT_STDERR], "env": env},
            },
        ],
    }
    drop(daemons.inbox, "forms.json", doc)
    result = wait_result(daemons.outbox, "forms")
    printed = result["nodes"]["print"]["output"]["stdout"].splitlines()
    assert printed == ["'***'", '"***"', '"***"', "***", "***", "***"]
    error = result["nodes"]["cut"]["error"]
    assert "***BBB" in error, error
    assert SECRET[len(SECRET) // 2 :] not in error
    for path in written_files(daemons.root, secrets_dir):
        data = path.read_bytes().decode("utf-8", "replace")
        for form in forms(SECRET):
            assert form not in data, (path, form)


@pytest.mark.timeout(60)
def test_every_log_line_stays_json_when_a_secret_is_digits(daemons: Daemons) -> None:
    """With a secret of digits that also appear in timestamps and in a number of a log
    line (a retry's delay), every line the daemon wrote parses, numbers keep their value,
    and no string in any line holds the secret."""
    secret = "2026"
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "pin").write_text(secret)
    daemon = daemons.start(WFE_SECRETS_DIR=str(secrets_dir), WFE_ENABLE_SHELL="1")
    doc = {
        "name": "digits",
        "nodes": [
            {
                "id": "fail",
                "type": "shell",
                "retries": 1,
                "retry_delay": 0.2026,
                "params": {
                    "argv": ["sh", "-c", 'echo "pin $P" >&2; exit 1'],
                    "env": {"P": "{{ secrets.pin }}"},
                },
            }
        ],
    }
    drop(daemons.inbox, "digits.json", doc)
    result = wait_result(daemons.outbox, "digits")
    assert result["nodes"]["fail"]["error"].endswith("stderr: pin ***")
    assert daemon.terminate() == 0
    lines = daemon.stdout().splitlines()
    events = [json.loads(line) for line in lines]  # every line parses
    retries = [event for event in events if event["event"] == "node.retry"]
    assert [event["delay"] for event in retries] == [0.2026]

    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
        if isinstance(value, list):
            return [s for item in value for s in strings(item)]
        return []

    read = [event for event in events if event["event"] == "node.started"]
    assert read, "the node started after the secret was read"
    for event in events[events.index(read[0]) :]:
        for text in strings(event):
            assert secret not in text, (event, text)
